{#- The salt-master service from the checkout's venv. A new config or unit
    restarts it a few seconds after the run, so that the highstate that
    changed it still returns through it. #}
{%- from 'salt_master/map.jinja' import salt_master, state_dir, venv with context %}

salt-master-service-unit-managed:
  file.managed:
    - name: /etc/systemd/system/{{ salt_master.service }}.service
    - source: salt://salt_master/files/salt-master.service.j2
    - template: jinja
    - context:
        venv: {{ venv | json }}
        state_dir: {{ state_dir | json }}
    - mode: '0644'

salt-master-service-enabled:
  service.enabled:
    - name: {{ salt_master.service }}
    - require:
      - file: salt-master-service-unit-managed

salt-master-service-restart-scheduled:
  cmd.run:
    - name: >-
        systemctl daemon-reload &&
        systemd-run --on-active={{ salt_master.restart_delay | string | quote }} --unit=salt-master-restart --collect
        systemctl restart {{ salt_master.service | quote }}
    - onchanges:
      - file: salt-master-service-unit-managed
      - file: salt-master-config-sdb-managed
      - cmd: salt-master-config-rendered
