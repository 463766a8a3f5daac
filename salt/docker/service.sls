{#- The engine enabled and running; a new daemon.json or package restarts it
    (live-restore keeps the containers running meanwhile). #}
{%- from 'docker/map.jinja' import docker %}
include:
  - docker.package
  - docker.config

docker-service-running:
  unit.running:
    - name: {{ docker.service }}
    - enable: true
    - watch:
      - pkg: docker-package-installed
      - file: docker-config-file-managed
