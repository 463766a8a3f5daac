{#- The service's own system account: no shell, no home of its own; its data
    lives in systemd's StateDirectory. #}
{%- from 'chat/map.jinja' import chat %}

chat-user-group-present:
  group.present:
    - name: {{ chat.user }}
    - system: true

chat-user-present:
  user.present:
    - name: {{ chat.user }}
    - gid: {{ chat.user }}
    - system: true
    - home: /var/lib/{{ chat.name }}
    - createhome: false
    - shell: /usr/sbin/nologin
    - fullname: {{ chat.name }} service
    - require:
      - group: chat-user-group-present
