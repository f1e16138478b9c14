# OpenBao (Vault API) server for the compose deployment: file storage, TLS terminated in
# front of it in production. Initialise and unseal once, then create the AppRole as in
# docs/configuration.md (the sandbox's sandbox/vault.py does the same steps in dev mode).
storage "file" { path = "/openbao/data" }
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true
}
ui = true
api_addr = "http://vault:8200"
