default['demo_web']['version'] = '0.0.0'
