{#- The service runs and starts at boot. A new environment (a rotated password)
    or unit restarts it; a new release was restarted by chat.release. #}
{%- from 'chat/map.jinja' import unit %}
include:
  - chat.release

chat-service-running:
  unit.running:
    - name: {{ unit }}
    - enable: true
    - require:
      - go_service: chat-release-deployed
    - watch:
      - go_service: chat-config-env-file-managed
      - file: chat-config-unit-managed
