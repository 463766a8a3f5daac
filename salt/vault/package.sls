{#- The server binary: HashiCorp's package from its apt repository, or OpenBao's
    binary from a path on the master's file server (vault:server:binary_source). #}
{%- from 'vault/map.jinja' import vault, flavor %}
{%- if vault.server.flavor == 'vault' %}
include:
  - common.apt

vault-package-repo-managed:
  pkgrepo.managed:
    - name: {{ flavor.repo }}
    - file: /etc/apt/sources.list.d/hashicorp.list
    - key_url: {{ flavor.repo_key_url }}
    - signedby: /usr/share/keyrings/hashicorp-archive-keyring.gpg
    - aptkey: false
    - require:
      - module: common-apt-lists-refreshed

vault-package-installed:
  pkg.installed:
    - name: {{ flavor.package }}
    - require:
      - pkgrepo: vault-package-repo-managed
{%- else %}

vault-package-group-present:
  group.present:
    - name: {{ flavor.user }}
    - system: true

vault-package-user-present:
  user.present:
    - name: {{ flavor.user }}
    - gid: {{ flavor.user }}
    - system: true
    - home: {{ flavor.data_dir }}
    - createhome: false
    - shell: /usr/sbin/nologin
    - require:
      - group: vault-package-group-present
{%-   if vault.server.binary_source %}

{#- master_file (_states/master_file.py): one hash of the installed binary against
    the master's, where file.managed hashed its 182 MB six times per run. #}
vault-package-installed:
  master_file.managed:
    - name: {{ flavor.binary }}
    - source: {{ vault.server.binary_source }}
    - mode: '0755'
    - user: root
    - group: root
{%-   else %}

vault-package-installed:
  test.fail_without_changes:
    - name: >-
        vault:server:binary_source is not set: with flavor openbao the bao binary comes from a
        salt:// path on the master's file server that the site provides; nothing is downloaded
{%-   endif %}
{%- endif %}
