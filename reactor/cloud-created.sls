{#- salt/cloud/<name>/created: a guest was created by salt-cloud on this master;
    bring it to its highstate. Only the master's own salt-cloud events act: an
    event a minion forwards always carries the sender's `id` and
    `cmd: _minion_event`, and is ignored here. Nothing else is taken from the
    event: the name comes from the tag and the orchestration checks it against
    the site before targeting it. #}
{%- set name = tag.split('/')[2] if tag.count('/') == 3 else '' %}
{%- if 'id' not in data and 'cmd' not in data and name is match('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$') %}
cloud-created-orchestrate-{{ name }}:
  runner.state.orchestrate:
    - args:
      - mods: orch.provisioned
      - pillar:
          provisioned_guest: {{ name }}
{%- endif %}
