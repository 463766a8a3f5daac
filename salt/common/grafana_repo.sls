{#- Grafana's apt repository (Grafana, Loki, Alloy), signed by its key in a
    keyring of its own: the log shipper on every guest and the monitoring
    role's Grafana and Loki. Production only: it is unreachable from the lab. #}
{%- import 'lib/platform.jinja' as platform %}
{%- set grafana = platform.params.monitoring.grafana %}
include:
  - common.apt

common-grafana-repo-managed:
  pkgrepo.managed:
    - name: {{ grafana.repo }}
    - file: /etc/apt/sources.list.d/grafana.list
    - key_url: {{ grafana.repo_key_url }}
    - signedby: /usr/share/keyrings/grafana.gpg
    - aptkey: false
    - require:
      - module: common-apt-lists-refreshed
