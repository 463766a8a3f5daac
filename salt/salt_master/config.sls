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

{#- Salt resolves the sdb:// values of its config when the master starts: a master
    that started before the operator wrote the credentials (or that still has old
    ones) keeps what it read then, and every Vault token it issues fails. The
    credentials' fingerprint is recorded here; when it changes, the master is
    restarted (service.sls), so the run after the operator's step 5 is the one that
    makes the master use them. The fingerprint is never shown. #}
{%- set approle = state_dir ~ '/etc/vault-master.yaml' %}
{%- set approle_seen = salt['file.get_hash'](approle, 'sha256') if salt['file.file_exists'](approle) else 'absent' %}
salt-master-config-approle-loaded:
  file.managed:
    - name: {{ state_dir }}/etc/.vault-master.loaded
    - contents: {{ approle_seen | json }}
    - show_changes: false
    - mode: '0600'
    - makedirs: true

salt-master-config-rendered:
  cmd.run:
    - name: {{ sitectl | quote }}{% for arg in master_config_args %} {{ arg | quote }}{% endfor %}
    - unless: {{ sitectl | quote }}{% for arg in master_config_args %} {{ arg | quote }}{% endfor %} --check
    - require:
      - sls: salt_master.checkout
      - sls: salt_master.install
