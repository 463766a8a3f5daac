# Every minion gets the role catalog, the whole site (no secret lives in either:
# secrets are Vault references) and, where the master is configured with one,
# an overlay such as the lab's. The `platform` ext_pillar validates the merged
# result and derives each guest's own view from it (see _pillar/platform.py).
{%- set site = opts.get('platform_site', 'example') %}
{%- set overlay = opts.get('platform_overlay') %}
base:
  '*':
    - platform.roles
    - site.{{ site }}
{%- if overlay %}
    - overlays.{{ overlay }}
{%- endif %}
