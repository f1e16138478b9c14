# demo-web: installs the app; its secrets arrive at bake time from Vault through the
# data-bag secret file Packer writes (never in attributes, never in the run list).
package 'nginx'

template '/etc/nginx/conf.d/demo-web.conf' do
  source 'demo-web.conf.erb'
  variables(version: node['demo_web']['version'])
  notifies :reload, 'service[nginx]'
end

file '/usr/share/nginx/html/health' do
  content "ok\n"
end

service 'nginx' do
  action [:enable, :start]
end

systemd_unit 'demo-web.service' do
  content(Unit: { Description: 'demo-web' },
          Service: { ExecStart: '/usr/bin/sleep infinity', Restart: 'always' },
          Install: { WantedBy: 'multi-user.target' })
  action [:create, :enable, :start]
end
