{#- platform/acme/expiring: a reverse proxy's daily check found a certificate
    close to its end. As acme-renewed.sls: nothing in the event is trusted; the
    runner reads the certificate's end on the site's reverse proxies itself. #}
{%- set lineage = (data.get('data') or data).get('lineage', '') if data is mapping else '' %}
{%- if lineage is string and lineage is match('^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$') %}
acme-expiring-{{ lineage }}:
  runner.acme.expiring:
    - args:
      - lineage: {{ lineage | json }}
{%- endif %}
