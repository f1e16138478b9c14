# linux-base: runs first on every Linux AMI (stacked cookbooks, not stacked AMIs).
execute 'os-updates' do
  command 'dnf -y upgrade --refresh'
end

%w(chrony amazon-ssm-agent).each do |svc|
  package svc
  service svc do
    action [:enable, :start]
  end
end

file '/etc/ssh/sshd_config.d/10-hardening.conf' do
  content "PermitRootLogin no\nPasswordAuthentication no\n"
  mode '0600'
end

file '/etc/ami-release' do
  content "base=linux-base\n"
  mode '0644'
end

# The release's identity (app, version, release id, source commit, bundle digest), from the
# node JSON the pipeline hands chef-solo: a person on the instance, and the smoke test, can
# tell which release this image is. Never a secret.
file '/etc/ami-release.json' do
  content Chef::JSONCompat.to_json_pretty(node['ami_release'].to_hash)
  mode '0644'
  only_if { node['ami_release'] }
end
