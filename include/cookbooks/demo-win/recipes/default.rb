windows_feature 'IIS-WebServerRole' do
  action :install
end
