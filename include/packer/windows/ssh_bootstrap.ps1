<powershell>
# The builder's user data: OpenSSH Server for Packer's SSH communicator, logging in as
# Administrator with the instance's key pair (the same communicator as Linux: no password
# from GetPasswordData, no WinRM listener with basic auth left in the image). OpenSSH ships
# with Windows Server 2019 and later (installed, stopped, on 2025; a capability before).
$ErrorActionPreference = 'Stop'
if (-not (Get-Service sshd -ErrorAction SilentlyContinue)) {
  Add-WindowsCapability -Online -Name OpenSSH.Server~~~~0.0.1.0 | Out-Null
}
# The key pair's public key from the instance metadata (IMDSv2), as Administrator's only key.
$token = Invoke-RestMethod -Method Put -Uri 'http://169.254.169.254/latest/api/token' `
  -Headers @{ 'X-aws-ec2-metadata-token-ttl-seconds' = '300' }
$key = Invoke-RestMethod -Uri 'http://169.254.169.254/latest/meta-data/public-keys/0/openssh-key' `
  -Headers @{ 'X-aws-ec2-metadata-token' = $token }
New-Item -ItemType Directory -Force 'C:\ProgramData\ssh' | Out-Null
$keys = 'C:\ProgramData\ssh\administrators_authorized_keys'
Set-Content -Path $keys -Value $key -Encoding ascii
icacls $keys /inheritance:r /grant 'Administrators:F' /grant 'SYSTEM:F' | Out-Null
if (-not (Get-NetFirewallRule -Name 'OpenSSH-Server-In-TCP' -ErrorAction SilentlyContinue)) {
  New-NetFirewallRule -Name 'OpenSSH-Server-In-TCP' -DisplayName 'OpenSSH Server (sshd)' -Direction Inbound `
    -Protocol TCP -LocalPort 22 -Action Allow | Out-Null
}
Set-Service sshd -StartupType Manual
Start-Service sshd
</powershell>
