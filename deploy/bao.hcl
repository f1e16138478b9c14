# OpenBao (Vault API) server for the compose deployment: persistent integrated storage
# (raft, one node; OpenBao 2.x has no "file" backend any more), TLS on the listener with the
# certificate from `python -m amirelease.vault_bootstrap tls --out deploy/tls`.
# Initialise, unseal and configure once with `python -m amirelease.vault_bootstrap init`
# (docs/configuration.md). The cluster test (tests/deploy/test_cluster.py) runs this very
# file with only the paths and addresses rewritten.
storage "raft" {
  path    = "/openbao/data"
  node_id = "vault-1"
}
listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/openbao/tls/vault.pem"
  tls_key_file    = "/openbao/tls/vault-key.pem"
  tls_min_version = "tls12"
}
api_addr     = "https://vault:8200"
cluster_addr = "https://vault:8201"
ui           = false
# Integrated storage memory-maps its database: OpenBao recommends disabling mlock with it.
disable_mlock = true
