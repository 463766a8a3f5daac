{#- The checkout of the owner's repository at main, fetched with the deploy
    key read from Vault at apply time. The checkout is cloned here once; what
    moves it afterwards is the deploy job (sitectl deploy: to the pushed commit
    of main, never back), so a highstate of the control node never races a
    deploy. #}
{%- from 'salt_master/map.jinja' import salt_master, checkout with context %}
{%- set ssh_command = 'ssh -i ' ~ salt_master.deploy_key.file ~ ' -o IdentitiesOnly=yes'
                      ~ ' -o UserKnownHostsFile=/etc/salt-platform/known_hosts -o StrictHostKeyChecking=yes' %}

salt-master-checkout-packages-installed:
  pkg.installed:
    - pkgs: [git, openssh-client]

{%- if not salt_master.repository.url %}

salt-master-checkout-repository-set:
  test.fail_without_changes:
    - name: 'salt_master:repository:url is not set: the owner''s repository (SSH URL) the control node fetches'
{%- else %}

salt-master-checkout-known-hosts-managed:
  file.managed:
    - name: /etc/salt-platform/known_hosts
    - source: salt://salt_master/files/known_hosts.j2
    - template: jinja
    - context:
        keys: {{ salt_master.repository.known_hosts | json }}
    - makedirs: true
    - mode: '0644'

salt-master-checkout-deploy-key-managed:
  file.managed:
    - name: {{ salt_master.deploy_key.file }}
    - source: salt://salt_master/files/deploy_key.j2
    - template: jinja
    - context:
        salt_master: {{ salt_master | json }}
    - makedirs: true
    - dir_mode: '0700'
    - mode: '0600'
    - show_changes: false

salt-master-checkout-cloned:
  cmd.run:
    - name: git clone --quiet --branch {{ salt_master.branch | quote }} -- {{ salt_master.repository.url | quote }} {{ checkout | quote }}
    - env:
      - GIT_SSH_COMMAND: {{ ssh_command | json }}
    - creates: {{ checkout }}/.git
    - require:
      - pkg: salt-master-checkout-packages-installed
      - file: salt-master-checkout-deploy-key-managed
      - file: salt-master-checkout-known-hosts-managed

salt-master-checkout-origin-set:
  git.config_set:
    - name: remote.origin.url
    - value: {{ salt_master.repository.url }}
    - repo: {{ checkout }}
    - require:
      - cmd: salt-master-checkout-cloned

salt-master-checkout-ssh-command-set:
  git.config_set:
    - name: core.sshCommand
    - value: {{ ssh_command | json }}
    - repo: {{ checkout }}
    - require:
      - cmd: salt-master-checkout-cloned
{%- endif %}
