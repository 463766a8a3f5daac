{#- Alertmanager (Debian's prometheus-alertmanager): routes, grouping and
    inhibition as code, mail through the site's mail guest. Its SMTP login is
    alertmanager@<domain> with a password generated into Vault
    (roles/monitoring/smtp) and written to a file only root and the service's
    group read; the config is checked by amtool before it replaces the old one
    and the service reloads. Gossip (clustering) is off: one instance. #}
{%- from 'monitoring/map.jinja' import monitoring, guest, watch, alertmanager, own_ports, listen_ip, config_dir, mail_to,
                                       mail_from, smtp_password_file %}
{%- set config_file = config_dir ~ '/alertmanager.yml' %}
{%- set address = listen_ip ~ ':' ~ own_ports.alertmanager %}
{%- set args = ['--config.file=' ~ config_file, '--web.listen-address=' ~ address,
                '--web.external-url=http://' ~ address, '--cluster.listen-address='] %}

monitoring-alertmanager-package-installed:
  pkg.installed:
    # curl: the reload waits until the daemon answers.
    - pkgs: [prometheus-alertmanager, curl]

monitoring-alertmanager-smtp-secret-generated:
  vault_server.secret_generated:
    - name: {{ alertmanager.vault_path }}
    - mount: {{ monitoring.vault_mount }}
    - fields:
        password: {length: 32, alphabet: alphanumeric}

monitoring-alertmanager-smtp-password-managed:
  file.managed:
    - name: {{ smtp_password_file }}
    - source: salt://monitoring/files/secret.j2
    - template: jinja
    - context:
        path: {{ alertmanager.vault_path }}
        field: password
        mount: {{ monitoring.vault_mount }}
    - user: root
    - group: prometheus
    - mode: '0640'
    - show_changes: false
    - require:
      - pkg: monitoring-alertmanager-package-installed
      - vault_server: monitoring-alertmanager-smtp-secret-generated

monitoring-alertmanager-config-managed:
  file.managed:
    - name: {{ config_file }}
    - source: salt://monitoring/files/alertmanager.yml.j2
    - template: jinja
    - user: root
    - group: prometheus
    - mode: '0640'
    - check_cmd: amtool check-config
    - context:
        alertmanager: {{ alertmanager | json }}
        smarthost: {{ (watch.get('mail_smarthost') or 'localhost:25') | json }}
        mail_to: {{ mail_to | json }}
        mail_from: {{ mail_from | json }}
        fqdn: {{ guest.get('fqdn', 'localhost') | json }}
        password_file: {{ smtp_password_file }}
    - require:
      - file: monitoring-alertmanager-smtp-password-managed

monitoring-alertmanager-args-managed:
  file.managed:
    - name: /etc/default/prometheus-alertmanager
    - contents: |
        # Managed by Salt (monitoring.alertmanager)
        ARGS="{{ args | join(' ') }}"
    - require:
      - pkg: monitoring-alertmanager-package-installed

monitoring-alertmanager-service-running:
  unit.running:
    - name: prometheus-alertmanager
    - enable: true
    - watch:
      - file: monitoring-alertmanager-args-managed
      - pkg: monitoring-alertmanager-package-installed

monitoring-alertmanager-reloaded:
  cmd.run:
    # A reload right after a restart would reach the daemon before its SIGHUP handler: wait until it
    # answers first.
    - name: >-
        timeout 60 sh -c 'until curl -sfo /dev/null "$0"; do sleep 1; done' {{ ('http://' ~ listen_ip ~ ':' ~ own_ports.alertmanager ~ '/-/ready') | quote }}
        && systemctl reload prometheus-alertmanager
    - onchanges:
      - file: monitoring-alertmanager-config-managed
    - require:
      - unit: monitoring-alertmanager-service-running
