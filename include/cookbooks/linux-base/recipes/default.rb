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
