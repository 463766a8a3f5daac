{#- Grafana's apt repository (Grafana, Loki, Alloy), signed by its key in a
    keyring of its own. Production only: it is unreachable from the lab. #}
{%- from 'monitoring/map.jinja' import monitoring %}
include:
  - common.apt

monitoring-grafana-repo-managed:
  pkgrepo.managed:
    - name: {{ monitoring.grafana.repo }}
    - file: /etc/apt/sources.list.d/grafana.list
    - key_url: {{ monitoring.grafana.repo_key_url }}
    - signedby: /usr/share/keyrings/grafana.gpg
    - aptkey: false
    - require:
      - cmd: common-apt-lists-refreshed
