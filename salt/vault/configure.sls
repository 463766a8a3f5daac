{#- Vault configured as code: the KV v2 engine, AppRole (the Salt master's
    credentials), Kubernetes auth for k3s, a policy per role and per guest (the
    master's saltext-vault issues each minion a token with exactly
    salt_minion_<id> and salt_role_<role> of its roles), the audit device (Vault:
    API; OpenBao: server config), and the secrets generated if absent.
    Authenticates with this guest's master-issued token (policy salt_role_vault). #}
{%- from 'vault/map.jinja' import vault, flavor, roles, local_url, ca_cert, secret_grants as grants %}
{%- from 'lib/platform.jinja' import site, apps, k3s %}
{#- An app's policy on k3s: its own secrets and exactly the credentials it names (sitectl/apps.py). #}
{%- macro app_policy(app, kv) -%}
# The app {{ app.namespace }} on k3s (External Secrets Operator, Kubernetes auth).
path "{{ kv }}/data/{{ app.own_secrets }}/*" { capabilities = ["read"] }
{%- for credential in app.credentials %}
path "{{ kv }}/data/{{ credential.vault_path }}" { capabilities = ["read"] }
{%- endfor %}
{% endmacro %}
{%- set kv = vault.secrets_mount %}
{%- set conn = {'url': local_url, 'verify': ca_cert} %}
{%- set guests = site.get('guests', {}) %}
include:
  - vault.unseal

vault-configure-kv-enabled:
  vault_server.secrets_engine_enabled:
    - name: {{ kv }}
    - backend_type: kv
    - options: {version: '2'}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed

vault-configure-approle-enabled:
  vault_server.auth_method_enabled:
    - name: {{ vault.approle_mount }}
    - method_type: approle
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed

vault-configure-approle-salt-master-present:
  vault_server.approle_role_present:
    - name: salt-master
    - mount: {{ vault.approle_mount }}
    - token_policies: [salt_master]
    - token_ttl: 1h
    - token_max_ttl: 4h
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-configure-approle-enabled

vault-configure-policy-salt-master-present:
  vault_server.policy_present:
    - name: salt_master
    - rules: |
        # saltext-vault on the master: issue per-minion tokens with assigned policies.
        path "auth/token/create" { capabilities = ["create", "read", "update", "sudo"] }
        path "auth/token/lookup-self" { capabilities = ["read"] }
        path "auth/token/renew-self" { capabilities = ["update"] }
        path "sys/policies/acl/salt_*" { capabilities = ["read"] }
{%- set proxmox_ref = (site.get('proxmox') or {}).get('token_secret', '') %}
{%- if proxmox_ref.startswith('vault:') %}
        # salt-cloud on the master reads the Proxmox token's secret at run time (sdb, salt_master role).
        path "{{ kv }}/data/{{ proxmox_ref[6:].split('#')[0] }}" { capabilities = ["read"] }
{%- endif %}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed

vault-configure-policy-raft-snapshot-present:
  vault_server.policy_present:
    - name: raft_snapshot
    - rules: |
        # The backup timer's token (vault.backup): snapshots only.
        path "sys/storage/raft/snapshot" { capabilities = ["read"] }
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed
{%- for role in roles | sort %}

vault-configure-policy-role-{{ role }}-present:
  vault_server.policy_present:
    - name: salt_role_{{ role }}
    - rules: |
{%-   if role == 'vault' %}
        # The vault guest configures Vault as code (salt/vault/configure.sls).
        path "sys/mounts" { capabilities = ["read"] }
        path "sys/mounts/*" { capabilities = ["create", "read", "update"] }
        path "sys/auth" { capabilities = ["read"] }
        path "sys/auth/*" { capabilities = ["create", "read", "update", "sudo"] }
        path "sys/audit" { capabilities = ["read", "sudo"] }
        path "sys/audit/*" { capabilities = ["create", "read", "update", "sudo"] }
        path "sys/policies/acl/*" { capabilities = ["create", "read", "update"] }
        path "auth/{{ vault.approle_mount }}/role/*" { capabilities = ["create", "read", "update"] }
        path "auth/{{ vault.kubernetes.mount }}/config" { capabilities = ["create", "read", "update"] }
        path "auth/{{ vault.kubernetes.mount }}/role/*" { capabilities = ["create", "read", "update"] }
        path "{{ kv }}/data/*" { capabilities = ["create", "read", "update"] }
        path "{{ kv }}/metadata/*" { capabilities = ["read", "list"] }
{%-   else %}
        # Guests with the role {{ role }}: its secrets, generated on first apply.
        path "{{ kv }}/data/roles/{{ role }}/*" { capabilities = ["create", "read", "update"] }
        path "{{ kv }}/metadata/roles/{{ role }}/*" { capabilities = ["read", "list"] }
{%-   endif %}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed
{%- endfor %}
{%- for minion in guests | sort %}

vault-configure-policy-minion-{{ minion }}-present:
  vault_server.policy_present:
    - name: salt_minion_{{ minion }}
    - rules: |
        # {{ minion }} alone: secrets of this guest only.
        path "{{ kv }}/data/minions/{{ minion }}/*" { capabilities = ["create", "read", "update"] }
        path "{{ kv }}/metadata/minions/{{ minion }}/*" { capabilities = ["read", "list"] }
{%-   if minion == k3s.get('server') %}
        # The k3s server points Kubernetes auth at its cluster (the reviewer's JWT and CA, read from it).
        path "auth/{{ vault.kubernetes.mount }}/config" { capabilities = ["create", "read", "update"] }
{%-     if k3s.get('kubelet_scraper') %}
        # It alone can read the kubelet scraper's token from the cluster: it writes it for the monitoring role.
        path "{{ kv }}/data/{{ k3s.kubelet_scraper.vault_path }}" { capabilities = ["create", "read", "update"] }
{%-     endif %}
{%-   endif %}
{%-   for path in grants.get(minion, []) %}
        # Another role's secret: a client's credential, or the mail route's certificate (sitectl.roles.secret_grants).
        path "{{ kv }}/data/{{ path }}" { capabilities = ["read"] }
{%-   endfor %}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed
{%- endfor %}
{%- for name, rules in vault.policies | dictsort %}

vault-configure-policy-{{ name }}-present:
  vault_server.policy_present:
    - name: {{ name }}
    - rules: {{ rules | json }}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed
{%- endfor %}

vault-configure-kubernetes-enabled:
  vault_server.auth_method_enabled:
    - name: {{ vault.kubernetes.mount }}
    - method_type: kubernetes
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed
{%- if vault.kubernetes.config %}

vault-configure-kubernetes-config-present:
  vault_server.kubernetes_config_present:
    - name: {{ vault.kubernetes.mount }}
{%-   for key, value in vault.kubernetes.config | dictsort %}
    - {{ key }}: {{ value | json }}
{%-   endfor %}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-configure-kubernetes-enabled
{%- endif %}
{%- for app_name, app in apps | dictsort if app.credentials %}

vault-configure-policy-{{ app.policy }}-present:
  vault_server.policy_present:
    - name: {{ app.policy }}
    - rules: {{ app_policy(app, kv) | json }}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed

vault-configure-kubernetes-role-{{ app.vault_role }}-present:
  vault_server.kubernetes_role_present:
    - name: {{ app.vault_role }}
    - mount: {{ vault.kubernetes.mount }}
    - bound_service_account_names: [{{ app.service_account }}]
    - bound_service_account_namespaces: [{{ app.namespace }}]
    - token_policies: [{{ app.policy }}]
    - token_ttl: 1h
    - token_max_ttl: 4h
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-configure-kubernetes-enabled
{%- endfor %}
{%- for role, spec in vault.kubernetes.roles | dictsort %}

vault-configure-kubernetes-role-{{ role }}-present:
  vault_server.kubernetes_role_present:
    - name: {{ role }}
    - mount: {{ vault.kubernetes.mount }}
{%-   for key, value in spec | dictsort %}
    - {{ key }}: {{ value | json }}
{%-   endfor %}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-configure-kubernetes-enabled
{%- endfor %}
{%- if vault.server.flavor == 'vault' %}

vault-configure-audit-enabled:
  vault_server.audit_device_enabled:
    - name: {{ vault.audit.path }}
    - device_type: file
    - options: {file_path: {{ flavor.log_dir }}/audit.log, mode: '0600'}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-unseal-unsealed
{%- endif %}
{%- for path, fields in vault.secrets | dictsort %}

vault-configure-secret-{{ path | replace('/', '-') }}-generated:
  vault_server.secret_generated:
    - name: {{ path }}
    - mount: {{ kv }}
    - fields: {{ fields | json }}
    - url: {{ conn.url }}
    - verify: {{ conn.verify }}
    - require:
      - vault_server: vault-configure-kv-enabled
{%- endfor %}
