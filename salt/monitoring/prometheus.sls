{#- Prometheus from Debian: its configuration and alert rules, each checked by
    promtool before it replaces the old one, then a reload (SIGHUP); its flags
    (listen address, retention by time and by a share of the guest's disk)
    restart it. #}
{%- from 'monitoring/map.jinja' import monitoring, site, watch, prometheus, own_ports, listen_ip, config_dir,
                                       rules_dir, retention_size, blackbox_address, vault_ca_file %}
{#- Vault's listeners have a certificate from Vault's own CA: Prometheus trusts
    the CA this minion trusts Vault with. #}
{%- set vault_pem = salt['vault_server.ca_certificate']() if watch.jobs.get('vault') else '' %}
{%- set vault_ca = vault_ca_file if vault_pem else '' %}
{#- k3s's kubelets: a certificate from the k3s server's CA and a bearer token of
    the scraper's service account, both written into Vault by the k3s server's
    cluster state (monitoring:kubelet:vault_path). #}
{%- set kubelet = monitoring.kubelet %}
{%- set k3s_jobs = watch.jobs.values() | selectattr('ca', 'equalto', 'k3s') | list %}
{%- set token_jobs = watch.jobs.values() | selectattr('bearer', 'equalto', 'kubelet') | list %}
{%- set k3s_ca = config_dir ~ '/k3s-ca.pem' if k3s_jobs else '' %}
{%- set kubelet_token = config_dir ~ '/kubelet.token' if token_jobs else '' %}
{%- set args = ['--config.file=' ~ config_dir ~ '/prometheus.yml',
                 '--web.listen-address=' ~ listen_ip ~ ':' ~ own_ports.prometheus,
                 '--storage.tsdb.path=' ~ prometheus.data_dir,
                 '--storage.tsdb.retention.time=' ~ prometheus.retention_time,
                 '--storage.tsdb.retention.size=' ~ retention_size] %}
include:
  - monitoring.alertmanager

monitoring-prometheus-package-installed:
  pkg.installed:
    # curl: the reload waits until the daemon answers.
    - pkgs: [prometheus, curl]

monitoring-prometheus-args-managed:
  file.managed:
    - name: /etc/default/prometheus
    - contents: |
        # Managed by Salt (monitoring.prometheus)
        ARGS="{{ args | join(' ') }}"
    - require:
      - pkg: monitoring-prometheus-package-installed

monitoring-prometheus-rules-dir-managed:
  file.directory:
    - name: {{ rules_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - clean: true
    - require:
      - pkg: monitoring-prometheus-package-installed

monitoring-prometheus-rules-managed:
  file.managed:
    - name: {{ rules_dir }}/platform.yml
    - source: salt://monitoring/files/platform.rules.yml
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
    - check_cmd: promtool check rules
    - require:
      - pkg: monitoring-prometheus-package-installed
    - require_in:
      - file: monitoring-prometheus-rules-dir-managed
{%- if vault_pem %}

monitoring-prometheus-vault-ca-managed:
  file.managed:
    - name: {{ vault_ca_file }}
    - contents: {{ vault_pem | json }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: monitoring-prometheus-package-installed
    - require_in:
      - file: monitoring-prometheus-config-managed
{%- endif %}
{%- for file, field, mode in [(k3s_ca, 'ca', '0644'), (kubelet_token, 'token', '0640')] if file %}

monitoring-prometheus-kubelet-{{ field }}-managed:
  file.managed:
    - name: {{ file }}
    - source: salt://monitoring/files/secret.j2
    - template: jinja
    - context:
        path: {{ kubelet.vault_path }}
        field: {{ field }}
        mount: {{ monitoring.vault_mount }}
    - user: root
    - group: prometheus
    - mode: '{{ mode }}'
    - show_changes: {{ field == 'ca' }}
    - require:
      - pkg: monitoring-prometheus-package-installed
    - require_in:
      - file: monitoring-prometheus-config-managed
    - onchanges_in:
      - cmd: monitoring-prometheus-reloaded
{%- endfor %}

monitoring-prometheus-config-managed:
  file.managed:
    - name: {{ config_dir }}/prometheus.yml
    - source: salt://monitoring/files/prometheus.yml.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    # Syntax and semantics of the whole config; the files it names are not opened: the rules have
    # their own check above and the kubelet's token and CA are required before this file.
    - check_cmd: promtool check config --syntax-only
    - context:
        site_name: {{ site.get('name', 'site') }}
        prometheus: {{ prometheus | json }}
        jobs: {{ watch.jobs | json }}
        targets: {{ watch.targets | json }}
        rules_dir: {{ rules_dir }}
        blackbox_address: {{ blackbox_address }}
        alertmanager_address: {{ listen_ip }}:{{ own_ports.alertmanager }}
        vault_ca: {{ vault_ca | json }}
        k3s_ca: {{ k3s_ca | json }}
        kubelet_token: {{ kubelet_token | json }}
    - require:
      - file: monitoring-prometheus-rules-managed

monitoring-prometheus-service-running:
  unit.running:
    - name: prometheus
    - enable: true
    - watch:
      - file: monitoring-prometheus-args-managed
      - pkg: monitoring-prometheus-package-installed

monitoring-prometheus-reloaded:
  cmd.run:
    # A reload right after a restart would reach the daemon before its SIGHUP handler: wait until it
    # answers first.
    - name: >-
        timeout 60 sh -c 'until curl -sfo /dev/null "$0"; do sleep 1; done' {{ ('http://' ~ listen_ip ~ ':' ~ own_ports.prometheus ~ '/-/ready') | quote }}
        && systemctl reload prometheus
    - onchanges:
      - file: monitoring-prometheus-config-managed
      - file: monitoring-prometheus-rules-managed
    - require:
      - unit: monitoring-prometheus-service-running
