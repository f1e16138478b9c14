name 'demo-win'
version '0.9.0'
supports 'windows'
