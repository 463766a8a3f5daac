{#- The salt-master service from the checkout's venv, enabled and running. A
    new config, unit or set of AppRole credentials restarts it a few seconds
    after the run, so that the highstate that changed it still returns through
    it. #}
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

{#- Started when it is not running (a new control node, a crash); a running
    master is never restarted here, only by the scheduled restart below. #}
salt-master-service-running:
  unit.running:
    - name: {{ salt_master.service }}
    - enable: true
    - require:
      - file: salt-master-service-unit-managed
      - file: salt-master-config-sdb-managed
      - cmd: salt-master-config-rendered

salt-master-service-restart-scheduled:
  cmd.run:
    - name: >-
        systemctl daemon-reload &&
        systemd-run --on-active={{ salt_master.restart_delay | string | quote }} --unit=salt-master-restart --collect
        systemctl restart {{ salt_master.service | quote }}
    - onchanges:
      - file: salt-master-service-unit-managed
      - file: salt-master-config-sdb-managed
      - file: salt-master-config-approle-loaded
      - cmd: salt-master-config-rendered
