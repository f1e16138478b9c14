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

# The release's identity from the pipeline's node JSON (see linux-base); never a secret.
file 'C:\\ProgramData\\ami-release.json' do
  content Chef::JSONCompat.to_json_pretty(node['ami_release'].to_hash)
  only_if { node['ami_release'] }
end
