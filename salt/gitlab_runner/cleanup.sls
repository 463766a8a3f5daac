{#- Docker's disk on the runner guest: a systemd timer removes stopped
    containers, unused images and build cache older than `until` (the job
    cache volumes are kept). #}
{%- from 'gitlab_runner/map.jinja' import d, cleanup_script %}
include:
  - docker

gitlab-runner-cleanup-script-managed:
  file.managed:
    - name: {{ cleanup_script }}
    - source: salt://gitlab_runner/files/docker-disk-cleanup.sh.j2
    - template: jinja
    - context:
        until: {{ d.cleanup.until | json }}
    - mode: '0755'
    - check_cmd: /bin/sh -n

gitlab-runner-cleanup-units-managed:
  file.managed:
    - names:
      - /etc/systemd/system/docker-disk-cleanup.service:
        - source: salt://gitlab_runner/files/docker-disk-cleanup.service.j2
      - /etc/systemd/system/docker-disk-cleanup.timer:
        - source: salt://gitlab_runner/files/docker-disk-cleanup.timer.j2
    - template: jinja
    - context:
        script: {{ cleanup_script | json }}
        on_calendar: {{ d.cleanup.on_calendar | json }}
    - mode: '0644'

gitlab-runner-cleanup-timer-running:
  unit.running:
    - name: docker-disk-cleanup.timer
    - enable: true
    - watch:
      - file: gitlab-runner-cleanup-units-managed
    - require:
      - file: gitlab-runner-cleanup-script-managed
      - unit: docker-service-running
