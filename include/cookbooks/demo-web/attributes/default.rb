# The pipeline sets node['demo_web']['version'] to the release's version (node JSON, -j);
# this default only shows in a converge outside the pipeline.
default['demo_web']['version'] = '0.0.0'
