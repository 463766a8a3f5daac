{#- The master's configuration, rendered by the same code as the lab's
    (`sitectl master-config`: etc/master.j2 with its reactors, the salt-cloud
    provider) into <checkout>/.salt/etc, and the two sdb profiles it reads:
    the master's AppRole credentials (docs/vault.md) and the Proxmox token's
    secret, which salt-cloud reads from Vault at run time (never a file). #}
{%- from 'salt_master/map.jinja' import salt_master, state_dir, sitectl, master_config_args, token_sdb with context %}

salt-master-config-sdb-managed:
  file.managed:
    - name: {{ state_dir }}/etc/master.d/platform-sdb.conf
    - source: salt://salt_master/files/platform-sdb.conf.j2
    - template: jinja
    - context:
        salt_master: {{ salt_master | json }}
        state_dir: {{ state_dir | json }}
    - makedirs: true
    - mode: '0600'

{#- The AppRole credentials are the operator's to write once (docs/vault.md,
    step 5); the state keeps them root's only and says when they are missing. #}
salt-master-config-approle-private:
  file.managed:
    - name: {{ state_dir }}/etc/vault-master.yaml
    - replace: false
    - create: false
    - mode: '0600'

salt-master-config-rendered:
  cmd.run:
    - name: {{ sitectl | quote }}{% for arg in master_config_args %} {{ arg | quote }}{% endfor %}
    - unless: {{ sitectl | quote }}{% for arg in master_config_args %} {{ arg | quote }}{% endfor %} --check
    - require:
      - sls: salt_master.checkout
      - sls: salt_master.install
