# The site file (pillar/site/<platform_site>.sls) and the role catalog
# (platform/roles.sls) are not rendered here: the `platform` ext_pillar reads
# them as plain YAML (never Jinja), validates the site and derives each guest's
# view (see _pillar/platform.py). Only the project's own overlays are pillar
# SLS, merged over the site: the lab's, where the master is configured with it.
{%- set overlay = opts.get('platform_overlay') %}
{%- if overlay %}
base:
  '*':
    - overlays.{{ overlay }}
{%- else %}
base: {}
{%- endif %}
