{#- The release built from chat.source is current and healthy: a new source is
    built, switched to and restarted, and rolled back if its health check
    fails; the same source builds and restarts nothing (go_service.released). #}
{%- from 'chat/map.jinja' import chat, unit, health_url, source %}
include:
  - chat.toolchain
  - chat.config

chat-release-deployed:
  go_service.released:
    - name: {{ chat.name }}
    - source: {{ source | json }}
    - base_dir: {{ chat.base_dir }}
    - unit: {{ unit }}
    - binary: {{ chat.binary }}
    - health_url: {{ health_url }}
    - health_timeout: {{ chat.health.timeout }}
    - keep: {{ chat.keep_releases }}
    - go: {{ {'root': chat.go.root, 'version': chat.go.version} | json }}
    - build: {{ chat.build | json }}
    - require:
      - sls: chat.toolchain
      - go_service: chat-config-env-file-managed
      - cmd: chat-config-systemd-reloaded
      - file: chat-config-unit-managed
