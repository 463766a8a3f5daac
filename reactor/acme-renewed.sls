{#- platform/acme/renewed: a reverse proxy's certbot renewed a lineage (its deploy
    hook sends the event). Only a minion event acts: the master sets `id` to the
    minion it authenticated and `cmd` to `_minion_event`; the runner checks with
    the master's pillar that this minion is a reverse proxy of the site and that
    the lineage is one of its own. The lineage is the only thing read from the
    event's data. #}
{%- set sender = data.get('id', '') if data.get('cmd') == '_minion_event' else '' %}
{%- set lineage = (data.get('data') or {}).get('lineage', '') %}
{%- if sender is match('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$') and lineage is string %}
acme-renewed-{{ sender }}:
  runner.acme.renewed:
    - args:
      - minion: {{ sender | json }}
      - lineage: {{ lineage | json }}
{%- endif %}
