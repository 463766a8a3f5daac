{#- The broker runs. No watch: a config change stopped it before the change
    (rabbitmq.config), so this starts it again, and nothing else restarts it. #}
{%- from 'rabbitmq/map.jinja' import rabbitmq %}
include:
  - rabbitmq.package

rabbitmq-service-running:
  unit.running:
    - name: {{ rabbitmq.service }}
    - enable: true
    - require:
      - pkg: rabbitmq-package-installed
