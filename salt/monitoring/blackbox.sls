{#- prometheus-blackbox-exporter (Debian) on loopback: Prometheus asks it to
    probe every public route through the proxies and the Salt master. Its
    modules come from the site; a config that does not load is not installed. #}
{%- from 'monitoring/map.jinja' import watch, blackbox, blackbox_address, config_dir %}
{%- set config_file = config_dir ~ '/blackbox.yml' %}

monitoring-blackbox-package-installed:
  pkg.installed:
    # curl: the reload waits until the daemon answers.
    - pkgs: [prometheus-blackbox-exporter, curl]

monitoring-blackbox-config-managed:
  file.managed:
    - name: {{ config_file }}
    - source: salt://monitoring/files/blackbox.yml.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: prometheus-blackbox-exporter --config.check --config.file
    - context:
        blackbox: {{ blackbox | json }}
        route_modules: {{ watch.get('route_modules', []) | json }}
    - require:
      - pkg: monitoring-blackbox-package-installed

monitoring-blackbox-args-managed:
  file.managed:
    - name: /etc/default/prometheus-blackbox-exporter
    - contents: |
        # Managed by Salt (monitoring.blackbox)
        ARGS="--config.file={{ config_file }} --web.listen-address={{ blackbox_address }}"
    - require:
      - pkg: monitoring-blackbox-package-installed

monitoring-blackbox-service-running:
  unit.running:
    - name: prometheus-blackbox-exporter
    - enable: true
    - watch:
      - file: monitoring-blackbox-args-managed
      - pkg: monitoring-blackbox-package-installed

monitoring-blackbox-reloaded:
  cmd.run:
    # A reload right after a restart would reach the daemon before its SIGHUP handler: wait until it
    # answers first.
    - name: >-
        timeout 60 sh -c 'until curl -sfo /dev/null "$0"; do sleep 1; done' {{ ('http://' ~ blackbox_address ~ '/-/healthy') | quote }}
        && systemctl reload prometheus-blackbox-exporter
    - onchanges:
      - file: monitoring-blackbox-config-managed
    - require:
      - unit: monitoring-blackbox-service-running
