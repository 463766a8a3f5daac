{#- The site's vhosts and users (site:messaging), the management user, and no
    other user (RabbitMQ's default `guest` first of all). Passwords are
    generated into Vault if absent and read by the rabbitmq_access states when
    they run: never rendered, shown or logged. A password changed in Vault is
    set with change_password, without a restart. #}
{%- from 'rabbitmq/map.jinja' import rabbitmq, messaging %}
{%- set users = {rabbitmq.admin.name: dict(tags=rabbitmq.admin.tags, permissions={})} %}
{%- for name, spec in messaging.get('users', {}).items() %}
{%-   do users.update({name: dict(tags=[], permissions=spec.permissions)}) %}
{%- endfor %}
include:
  - rabbitmq.service

rabbitmq-access-guest-absent:
  rabbitmq_access.user_absent:
    - name: guest
    - require:
      - unit: rabbitmq-service-running

{#- A consumer removed from the site loses its account. #}
rabbitmq-access-undeclared-users-absent:
  rabbitmq_access.only_declared_users:
    - name: undeclared
    - users: {{ users | list | sort | json }}
    - require:
      - unit: rabbitmq-service-running
{%- for vhost in messaging.get('vhosts', []) %}

rabbitmq-access-vhost-{{ vhost }}-present:
  rabbitmq_access.vhost_present:
    - name: {{ vhost }}
    - require:
      - unit: rabbitmq-service-running
{%- endfor %}
{%- for name, user in users | dictsort %}

rabbitmq-access-user-{{ name }}-secret-generated:
  vault_server.secret_generated:
    - name: {{ rabbitmq.users_path }}/{{ name }}
    - mount: {{ rabbitmq.vault_mount }}
    - fields:
        password: {length: {{ rabbitmq.password.length }}, alphabet: {{ rabbitmq.password.alphabet }}}

rabbitmq-access-user-{{ name }}-present:
  rabbitmq_access.user_present:
    - name: {{ name }}
    - password_path: {{ rabbitmq.users_path }}/{{ name }}
    - mount: {{ rabbitmq.vault_mount }}
    - tags: {{ user.tags | json }}
    - permissions: {{ user.permissions | json }}
    - require:
      - vault_server: rabbitmq-access-user-{{ name }}-secret-generated
      - unit: rabbitmq-service-running
{%-   for vhost in user.permissions | sort %}
      - rabbitmq_access: rabbitmq-access-vhost-{{ vhost }}-present
{%-   endfor %}
{%- endfor %}
