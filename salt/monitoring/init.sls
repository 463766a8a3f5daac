{#- The monitoring role: Prometheus with the targets and probes derived from
    the site, its alert rules, Alertmanager mailing through the site's mail
    guest, the blackbox exporter; Grafana and Loki from Grafana's repository.
    A part with `converge: false` (monitoring:grafana, monitoring:loki; the lab)
    is not applied here (its files are rendered and checked by the render tier
    only). #}
{%- from 'monitoring/map.jinja' import monitoring %}
include:
  - monitoring.blackbox
  - monitoring.alertmanager
  - monitoring.prometheus
{%- for part in ['grafana', 'loki'] if monitoring[part].converge %}
  - monitoring.{{ part }}
{%- endfor %}
