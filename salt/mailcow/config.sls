{#- mailcow.conf from the site. mailcow's own generate_config.sh runs once (it
    lays out what the stack needs besides the config: app_info, the rspamd
    placeholder, data/assets/ssl); the file it wrote is then replaced by this
    role's, whose secrets (database, Redis, SOGo's URL key, the API key) are
    generated into Vault and read when the state runs: never rendered into the
    highstate, never shown (show_changes: false), mode 0600. #}
{%- from 'mailcow/map.jinja' import mc, mail, site, guest, ports, secrets_path, api_key_path %}
include:
  - mailcow.checkout

mailcow-config-secrets-generated:
  vault_server.secret_generated:
    - name: {{ secrets_path }}
    - mount: {{ mc.vault.mount }}
    - fields:
        dbpass: {length: {{ mc.vault.password.length }}, alphabet: {{ mc.vault.password.alphabet }}}
        dbroot: {length: {{ mc.vault.password.length }}, alphabet: {{ mc.vault.password.alphabet }}}
        redispass: {length: {{ mc.vault.password.length }}, alphabet: {{ mc.vault.password.alphabet }}}
        {#- SOGo takes exactly 16 letters and digits. #}
        sogo_url_key: {length: 16, alphabet: alphanumeric}

mailcow-config-api-key-generated:
  vault_server.secret_generated:
    - name: {{ api_key_path }}
    - mount: {{ mc.vault.mount }}
    - fields:
        {{ mc.api_key.field }}: {length: {{ mc.api_key.length }}, alphabet: alphanumeric}

mailcow-config-generated:
  cmd.run:
    - name: ./generate_config.sh --dev </dev/null
    - cwd: {{ mc.dir }}
    - shell: /bin/bash
    - env:
        MAILCOW_HOSTNAME: {{ mail.host }}
        MAILCOW_TZ: {{ site.get('timezone', 'UTC') }}
        SKIP_CLAMD: {{ 'y' if mc.skip_clamd else 'n' }}
    - creates: {{ mc.dir }}/data/web/inc/app_info.inc.php
    - require:
      - git: mailcow-checkout-latest

mailcow-config-file-managed:
  file.managed:
    - name: {{ mc.dir }}/mailcow.conf
    - source: salt://mailcow/files/mailcow.conf.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: false
    - context:
        mc: {{ mc | json }}
        mail: {{ mail | json }}
        timezone: {{ site.get('timezone', 'UTC') }}
        master: {{ guest.master }}
        ports: {{ ports | json }}
        secrets_path: {{ secrets_path }}
        api_key_path: {{ api_key_path }}
    - require:
      - cmd: mailcow-config-generated
      - vault_server: mailcow-config-secrets-generated
      - vault_server: mailcow-config-api-key-generated
