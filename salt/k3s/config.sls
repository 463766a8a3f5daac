{#- k3s's config file from the site: the server on the first k3s guest, agents
    joining it with the token from Vault (k3s.join_token_file; never in the
    config or the pillar). Root only. #}
{%- from 'k3s/map.jinja' import k3s, cluster, guest, is_server, config_file, token_file, api_port %}
include:
  - k3s.prerequisites

k3s-config-file-managed:
  file.managed:
    - name: {{ config_file }}
    - source: salt://k3s/files/config.yaml.j2
    - template: jinja
    - mode: '0600'
    - user: root
    - group: root
    - context:
        is_server: {{ is_server | json }}
        node_ip: {{ guest.get('ip', '') | json }}
        node_name: {{ guest.get('name', '') | json }}
        fqdn: {{ guest.get('fqdn', '') | json }}
        server_url: {{ ('https://' ~ cluster.get('server_ip', '') ~ ':' ~ api_port) | json }}
        token_file: {{ token_file | json }}
        cluster_cidr: {{ k3s.cluster_cidr | json }}
        service_cidr: {{ k3s.service_cidr | json }}
        disable: {{ k3s.disable | json }}
    - require:
      - file: k3s-prerequisites-config-dir-managed
{%- if not is_server %}

k3s-config-join-token-present:
  k3s.join_token_file:
    - name: {{ token_file }}
    - vault_path: {{ k3s.join_token_path }}
    - require:
      - file: k3s-prerequisites-config-dir-managed
{%- endif %}
