{#- Debian's rabbitmq-server (and Erlang), installed only once its cookie and
    configuration are in place: its postinst starts the broker with them. #}
{%- from 'rabbitmq/map.jinja' import rabbitmq %}
include:
  - rabbitmq.config

rabbitmq-package-installed:
  pkg.installed:
    - name: {{ rabbitmq.package }}
    - require:
      - sls: rabbitmq.config
