<powershell>
# Enable WinRM over HTTPS with a self-signed certificate for the Packer communicator.
$cert = New-SelfSignedCertificate -DnsName "packer" -CertStoreLocation Cert:\LocalMachine\My
winrm quickconfig -quiet
New-Item -Path WSMan:\LocalHost\Listener -Transport HTTPS -Address * -CertificateThumbPrint $cert.Thumbprint -Force
netsh advfirewall firewall add rule name="WinRM-HTTPS" dir=in localport=5986 protocol=TCP action=allow
Set-Item WSMan:\localhost\Service\Auth\Basic -Value $true
</powershell>
