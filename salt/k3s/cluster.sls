{#- The cluster, through the Kubernetes API (the k3s modules; kubectl never
    runs): the node token into Vault for the agents; the platform's own set
    (Vault's token reviewer, External Secrets Operator from its Helm chart);
    Vault's Kubernetes auth pointed at this cluster with the reviewer's JWT and
    CA read from it; Vault's CA for ESO; the kubelet scraper's token and the
    cluster's CA into Vault for the monitoring role; then one set per app, each
    waited for. #}
{%- from 'k3s/map.jinja' import k3s, cluster, apps, kv %}
include:
  - k3s.service
{%- if cluster.get('sets') %}

k3s-cluster-api-ready:
  k3s.rollout_complete:
    - name: coredns
    - namespace: kube-system
    - timeout: {{ k3s.rollout_timeout }}
    - require:
      - unit: k3s-service-running

k3s-cluster-node-token-stored:
  k3s.node_token_stored:
    - name: {{ k3s.join_token_path }}
    - mount: {{ kv }}
    - require:
      - unit: k3s-service-running

k3s-cluster-platform-system-applied:
  k3s.manifests_applied:
    - name: platform-system
    - field_manager: {{ k3s.field_manager }}
    - manifests: {{ cluster.sets['platform-system'] | json }}
    - require:
      - k3s: k3s-cluster-api-ready

{%- if cluster.get('kubelet_scraper') %}

k3s-cluster-kubelet-scraper-token-stored:
  k3s.service_account_token_stored:
    - name: {{ cluster.kubelet_scraper.vault_path }}
    - secret: {{ cluster.kubelet_scraper.service_account }}
    - namespace: {{ cluster.kubelet_scraper.namespace }}
    - mount: {{ kv }}
    - require:
      - k3s: k3s-cluster-platform-system-applied
{%- endif %}

k3s-cluster-eso-rolled-out:
  k3s.rollout_complete:
    - name: {{ k3s.eso.chart }}
    - namespace: {{ k3s.eso.namespace }}
    - timeout: {{ k3s.rollout_timeout }}
    - require:
      - k3s: k3s-cluster-platform-system-applied

k3s-cluster-vault-ca-published:
  k3s.vault_ca_published:
    - name: vault-ca
    - namespace: {{ k3s.eso.namespace }}
    - field_manager: {{ k3s.field_manager }}
    - require:
      - k3s: k3s-cluster-platform-system-applied

k3s-cluster-vault-auth-configured:
  k3s.vault_auth_configured:
    - name: {{ k3s.vault_auth.mount }}
    - kubernetes_host: {{ cluster.api_url }}
    - reviewer_secret: {{ k3s.vault_auth.reviewer }}
    - reviewer_namespace: {{ k3s.vault_auth.reviewer_namespace }}
    - require:
      - k3s: k3s-cluster-platform-system-applied
{%- for set_name, manifests in cluster.sets | dictsort if set_name != 'platform-system' %}

k3s-cluster-{{ set_name }}-applied:
  k3s.manifests_applied:
    - name: {{ set_name }}
    - field_manager: {{ k3s.field_manager }}
    - manifests: {{ manifests | json }}
    - require:
      - k3s: k3s-cluster-eso-rolled-out
      - k3s: k3s-cluster-vault-ca-published
      - k3s: k3s-cluster-vault-auth-configured
{%- endfor %}
{%- for rollout in cluster.rollouts %}

k3s-cluster-app-{{ rollout.name }}-rolled-out:
  k3s.rollout_complete:
    - name: {{ rollout.name }}
    - namespace: {{ rollout.namespace }}
    - timeout: {{ k3s.rollout_timeout }}
    - require:
      - k3s: k3s-cluster-app-{{ rollout.name }}-applied
{%- endfor %}
{%- endif %}
