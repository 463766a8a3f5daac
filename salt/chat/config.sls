{#- The service's environment file (0600, its own user's; database and broker
    passwords read from Vault when the state runs, never rendered) and its
    hardened systemd unit. #}
{%- from 'chat/map.jinja' import chat, unit, environment, secrets, problems %}
include:
  - chat.user
{%- if problems %}

chat-config-site-checked:
  test.fail_without_changes:
    - name: "chat: {{ problems | join('; ') }}"
{%- endif %}

chat-config-dirs-managed:
  file.directory:
    - names:
      - {{ chat.env_file.rsplit('/', 1)[0] }}:
        - user: root
        - group: {{ chat.user }}
        - mode: '0750'
      - {{ chat.base_dir }}:
        - user: root
        - group: root
        - mode: '0755'
    - require:
      - user: chat-user-present

chat-config-env-file-managed:
  go_service.env_file:
    - name: {{ chat.env_file }}
    - user: {{ chat.user }}
    - values: {{ environment | json }}
    - secrets: {{ secrets | json }}
    - require:
      - file: chat-config-dirs-managed
{%- if problems %}
      - test: chat-config-site-checked
{%- endif %}
    {#- The site's database and broker may still be converging on their guests
        (a whole site comes up at once): their passwords appear in Vault. #}
    - retry:
        attempts: {{ chat.credentials_wait.attempts }}
        interval: {{ chat.credentials_wait.interval }}

chat-config-unit-managed:
  file.managed:
    - name: /etc/systemd/system/{{ unit }}
    - source: salt://chat/files/service.j2
    - template: jinja
    - context:
        chat: {{ chat | json }}
    - user: root
    - group: root
    - mode: '0644'

chat-config-systemd-reloaded:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: chat-config-unit-managed
