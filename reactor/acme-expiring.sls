{#- platform/acme/expiring: a reverse proxy's daily check found a certificate
    close to its end. Same trust rules as acme-renewed.sls: the sender is the
    id the master authenticated, checked by the runner against the pillar. #}
{%- set sender = data.get('id', '') if data.get('cmd') == '_minion_event' else '' %}
{%- set event = data.get('data') or {} %}
{%- if sender is match('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$') and event.get('lineage') is string %}
acme-expiring-{{ sender }}:
  runner.acme.expiring:
    - args:
      - minion: {{ sender | json }}
      - lineage: {{ event.lineage | json }}
      - days_left: {{ event.get('days_left') | json }}
{%- endif %}
