{#- salt/cloud/<name>/created: a guest was created by salt-cloud on this master;
    bring it to its highstate. Only the master's own salt-cloud events act: an
    event a minion forwards always carries the sender's `id` and
    `cmd: _minion_event`, and is ignored here. Nothing else is taken from the
    event: the name comes from the tag, and _runners/platform.py targets only a
    minion whose master-compiled pillar says it is that guest of the site. #}
{%- set name = tag.split('/')[2] if tag.count('/') == 3 else '' %}
{%- if 'id' not in data and 'cmd' not in data and name is match('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$') %}
cloud-created-highstate-{{ name }}:
  runner.platform.provisioned:
    - args:
      - name: {{ name }}
{%- endif %}
