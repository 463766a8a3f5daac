{#- The k3s release binary at the pinned version, its sha256 checked by Salt
    before it is put in place (no install script). Without a reachable source
    (the lab), nothing is installed and the run says why. #}
{%- from 'k3s/map.jinja' import install %}
{%- if install.converge %}

k3s-binary-installed:
  file.managed:
    - name: {{ install.binary }}
    - source: {{ install.source }}
    - source_hash: sha256={{ install.sha256 }}
    - mode: '0755'
    - user: root
    - group: root
{%- else %}

k3s-binary-not-installed:
  test.show_notification:
    - text: >-
        k3s {{ install.version }} is NOT installed here: {{ install.reason | default('switched off', true) }};
        its service and the cluster (External Secrets Operator, Vault's Kubernetes auth, the apps)
        are not converged
{%- endif %}
