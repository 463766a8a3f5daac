{#- daemon.json from the state's `daemon` settings; a candidate is checked by
    dockerd itself (`--validate`, Docker 23 and later) or, on an engine without
    that check (Debian's 20.10), parsed as JSON, before it replaces the live one. #}
{%- from 'docker/map.jinja' import docker, check_script %}
include:
  - docker.package

docker-config-check-script-managed:
  file.managed:
    - name: {{ check_script }}
    - source: salt://docker/files/check-config.sh.j2
    - template: jinja
    - mode: '0755'
    - check_cmd: /bin/sh -n
    - require:
      - test: docker-guest-nesting-checked

docker-config-file-managed:
  file.managed:
    - name: {{ docker.config_file }}
    - source: salt://docker/files/daemon.json.j2
    - template: jinja
    - context:
        daemon: {{ docker.daemon | json }}
    - makedirs: true
    - mode: '0644'
    - check_cmd: {{ check_script | quote }}
    - require:
      - pkg: docker-package-installed
      - file: docker-config-check-script-managed
