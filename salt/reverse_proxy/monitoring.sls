{#- prometheus-nginx-exporter on the guest's own address (the firewall opens
    it to the monitoring guest only), scraping stub_status on loopback. #}
{%- from 'reverse_proxy/map.jinja' import rp, guest, exporter %}
{%- set scrape_uri = 'http://' ~ rp.status.listen ~ ':' ~ rp.status.port ~ rp.status.path %}
{%- set listen = guest.get('ip', '127.0.0.1') ~ ':' ~ exporter.port %}
include:
  - reverse_proxy.service

reverse-proxy-exporter-args-managed:
  file.managed:
    - name: /etc/default/prometheus-nginx-exporter
    - contents: |
        # Managed by Salt (reverse_proxy.monitoring)
        ARGS="-nginx.scrape-uri={{ scrape_uri }} -web.listen-address={{ listen }}"
    - require:
      - pkg: reverse-proxy-packages-installed

reverse-proxy-exporter-running:
  unit.running:
    - name: prometheus-nginx-exporter
    - enable: true
    - require:
      - unit: reverse-proxy-nginx-running
    - watch:
      - file: reverse-proxy-exporter-args-managed
