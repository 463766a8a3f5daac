{#- Everything the broker reads at start, in place before the package first
    starts it: the rabbitmq user, the Erlang cookie from Vault, rabbitmq.conf,
    rabbitmq-env.conf, enabled_plugins and epmd on loopback. A real change to
    one of those files stops the running broker just before it is written
    (prereq) and rabbitmq.service starts it again: the CLI and the node never
    hold different cookies, and a failed Vault read or a refused config file
    changes nothing and stops nothing. #}
{%- from 'rabbitmq/map.jinja' import rabbitmq, guest, ports %}
{%- set cookie = rabbitmq.erlang_cookie %}
{#- The files the broker reads at start: each is rabbitmq-config-<part>-managed
    below, and each gets its own stop-before-change at the end of this file. #}
{%- set broker_files = ['cookie', 'file', 'env', 'plugins', 'epmd-socket'] %}

rabbitmq-config-group-present:
  group.present:
    - name: {{ rabbitmq.user }}
    - system: true

rabbitmq-config-user-present:
  user.present:
    - name: {{ rabbitmq.user }}
    - gid: {{ rabbitmq.user }}
    - system: true
    - home: {{ rabbitmq.home }}
    - createhome: false
    - shell: /usr/sbin/nologin
    - fullname: RabbitMQ messaging server
    - require:
      - group: rabbitmq-config-group-present

rabbitmq-config-dirs-managed:
  file.directory:
    - names:
      - {{ rabbitmq.config_dir }}
      - {{ rabbitmq.home }}
    - user: {{ rabbitmq.user }}
    - group: {{ rabbitmq.user }}
    - require:
      - user: rabbitmq-config-user-present

rabbitmq-config-cookie-secret-generated:
  vault_server.secret_generated:
    - name: {{ cookie.path }}
    - mount: {{ rabbitmq.vault_mount }}
    - fields:
        {{ cookie.field }}: {length: {{ cookie.length }}, alphabet: {{ cookie.alphabet }}}

rabbitmq-config-cookie-managed:
  file.managed:
    - name: {{ rabbitmq.home }}/.erlang.cookie
    - source: salt://rabbitmq/files/erlang.cookie.j2
    - template: jinja
    - context:
        rabbitmq: {{ rabbitmq | json }}
    - user: {{ rabbitmq.user }}
    - group: {{ rabbitmq.user }}
    - mode: '0400'
    - show_changes: false
    - require:
      - vault_server: rabbitmq-config-cookie-secret-generated
      - file: rabbitmq-config-dirs-managed
{#- rabbitmq.conf and enabled_plugins are rendered into checked/ first and checked
    there by the installed RabbitMQ's own parsers; only a file that passed is
    copied into place (so a refused one never stops the broker). #}
rabbitmq-config-check-script-managed:
  file.managed:
    - name: /usr/local/sbin/rabbitmq-config-check
    - source: salt://rabbitmq/files/config-check.sh
    - mode: '0755'
{%- if guest.get('ip') %}

rabbitmq-config-file-checked:
  file.managed:
    - name: {{ rabbitmq.config_dir }}/checked/rabbitmq.conf
    - source: salt://rabbitmq/files/rabbitmq.conf.j2
    - template: jinja
    - context:
        address: {{ guest.ip }}
        ports: {{ ports | json }}
    - makedirs: true
    - user: root
    - group: {{ rabbitmq.user }}
    - mode: '0640'
    - check_cmd: /usr/local/sbin/rabbitmq-config-check conf
    - require:
      - file: rabbitmq-config-check-script-managed
      - file: rabbitmq-config-dirs-managed
{%- else %}

rabbitmq-config-file-checked:
  test.fail_without_changes:
    - name: this minion is not a guest of the site (pillar platform:guest is empty); no address to listen on
{%- endif %}

rabbitmq-config-file-managed:
  file.managed:
    - name: {{ rabbitmq.config_dir }}/rabbitmq.conf
    - source: {{ rabbitmq.config_dir }}/checked/rabbitmq.conf
    - user: root
    - group: {{ rabbitmq.user }}
    - mode: '0640'
    - require:
      - rabbitmq-config-file-checked

rabbitmq-config-env-managed:
  file.managed:
    - name: {{ rabbitmq.config_dir }}/rabbitmq-env.conf
    - source: salt://rabbitmq/files/rabbitmq-env.conf.j2
    - template: jinja
    - context:
        rabbitmq: {{ rabbitmq | json }}
    - check_cmd: /bin/sh -n
    - user: root
    - group: {{ rabbitmq.user }}
    - mode: '0640'
    - require:
      - file: rabbitmq-config-dirs-managed

rabbitmq-config-plugins-checked:
  file.managed:
    - name: {{ rabbitmq.config_dir }}/checked/enabled_plugins
    - contents: '[{{ rabbitmq.plugins | join(",") }}].'
    - makedirs: true
    - user: root
    - group: {{ rabbitmq.user }}
    - mode: '0640'
    - check_cmd: /usr/local/sbin/rabbitmq-config-check plugins
    - require:
      - file: rabbitmq-config-check-script-managed
      - file: rabbitmq-config-dirs-managed

{#- The package's postinst and rabbitmq-plugins give this file to rabbitmq. #}
rabbitmq-config-plugins-managed:
  file.managed:
    - name: {{ rabbitmq.config_dir }}/enabled_plugins
    - source: {{ rabbitmq.config_dir }}/checked/enabled_plugins
    - user: {{ rabbitmq.user }}
    - group: {{ rabbitmq.user }}
    - mode: '0640'
    - require:
      - rabbitmq-config-plugins-checked

{#- Debian's epmd.socket listens on every address; this drop-in narrows it. #}
rabbitmq-config-epmd-socket-managed:
  file.managed:
    - name: /etc/systemd/system/epmd.socket.d/loopback.conf
    - source: salt://rabbitmq/files/epmd-loopback.conf.j2
    - template: jinja
    - context:
        rabbitmq: {{ rabbitmq | json }}
    - makedirs: true

{#- One stop per file: a file whose new content cannot be had (Vault down) holds
    back only its own change. #}
{%- for part in broker_files %}

rabbitmq-config-broker-stopped-for-{{ part }}:
  cmd.run:
    - name: >-
        systemctl stop {{ rabbitmq.service | quote }}
    - onlyif: >-
        systemctl is-active --quiet {{ rabbitmq.service | quote }}
    - prereq:
      - rabbitmq-config-{{ part }}-managed
{%- endfor %}

{#- Only when epmd.socket already runs (on a first install the package starts it
    with the drop-in in place). #}
rabbitmq-config-epmd-socket-restarted:
  cmd.run:
    - name: systemctl daemon-reload && systemctl restart epmd.socket
    - onlyif: systemctl is-active --quiet epmd.socket
    - onchanges:
      - file: rabbitmq-config-epmd-socket-managed
