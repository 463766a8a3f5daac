{#- platform/acme/renewed: a reverse proxy's certbot renewed a lineage (its deploy
    hook sends the event). Nothing in the event is trusted, not even who sent it
    (a minion can put any tag and data on the master's bus through Salt's batch
    event form): the lineage is a hint, and _runners/acme.py acts only where it
    reads, on a reverse proxy of the site that has that lineage, a certificate
    newer than the one it last acted on. #}
{%- set lineage = (data.get('data') or data).get('lineage', '') if data is mapping else '' %}
{%- if lineage is string and lineage is match('^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$') %}
acme-renewed-{{ lineage }}:
  runner.acme.renewed:
    - args:
      - lineage: {{ lineage | json }}
{%- endif %}
