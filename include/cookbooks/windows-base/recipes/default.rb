# windows-base: runs first on every Windows AMI.
powershell_script 'windows-updates' do
  code 'Install-WindowsUpdate -AcceptAll -IgnoreReboot'
end

windows_service 'AmazonSSMAgent' do
  action [:configure, :start]
  startup_type :automatic
end

registry_key 'HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows NT\\Terminal Services' do
  values [{ name: 'fDenyTSConnections', type: :dword, data: 1 }]
end
