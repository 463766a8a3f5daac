#!/bin/sh
# Managed by Salt (salt/rabbitmq). Checks a candidate config file with the installed
# RabbitMQ's own parsers before Salt puts it in place (file.managed check_cmd):
#   rabbitmq-config-check conf FILE      rabbitmq.conf against every cuttlefish schema
#   rabbitmq-config-check plugins FILE   enabled_plugins: one Erlang list of installed plugins
# Before the package is installed there is nothing to check against and no broker to break.
set -eu
kind=$1
file=$2
base=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-* 2>/dev/null | sort -V | tail -n 1)
if [ -z "$base" ]; then
    echo "RabbitMQ is not installed yet: $file not checked"
    exit 0
fi
case $kind in
conf)
    check='
[Base, File] = init:get_plain_arguments(),
Fail = fun(Errors) ->
    [io:format("~s: ~s~n", [File, cuttlefish_error:xlate(E)]) || {error, E} <- Errors],
    halt(1)
end,
case cuttlefish_conf:files([File]) of
    {errorlist, Errors} -> Fail(Errors);
    Terms ->
        Schema = cuttlefish_schema:files(filelib:wildcard(Base ++ "/plugins/*/priv/schema/*.schema")),
        case cuttlefish_generator:map(Schema, Terms) of
            {error, _Phase, {errorlist, Errors}} -> Fail(Errors);
            _ -> halt(0)
        end
end.' ;;
plugins)
    check='
[Base, File] = init:get_plain_arguments(),
case file:consult(File) of
    {ok, [Plugins]} when is_list(Plugins) ->
        Missing = [P || P <- Plugins, not is_atom(P) orelse
                        filelib:wildcard(Base ++ "/plugins/" ++ atom_to_list(P) ++ "-*") =:= []],
        Missing =:= [] orelse io:format("~s: not installed plugins: ~p~n", [File, Missing]),
        halt(length(Missing));
    Other ->
        io:format("~s: not one Erlang list of plugin names: ~p~n", [File, Other]),
        halt(1)
end.' ;;
*)
    echo "usage: rabbitmq-config-check conf|plugins FILE" >&2
    exit 2 ;;
esac
exec timeout 60 erl -noshell -noinput -boot start_clean -pa "$base"/plugins/*/ebin -eval "$check" \
    -extra "$base" "$file"
