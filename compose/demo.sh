#!/usr/bin/env bash
# The demo scenario of shared/seeds/000_*.txt, step by step, commands verbatim:
# each command is printed, run, and its output shown, as the demo document does.
# Needs the stack of `make up` (3 brokers, gateway1 on 6969/8888, gateway2 on
# 7969/8889) and the Kafka CLI, curl and jq on PATH; `make demo` does all that.
set -uo pipefail
workdir="${DEMO_DIR:-$(mktemp -d)}"
cd "$workdir" || exit 1
failures=0

step() {
    local title="$1" command="$2" note="${3:-}"
    printf '\n## %s\n\n```sh\n%s\n```\n\n' "$title" "$command"
    bash -c "$command"
    local rc=$?
    if [ -n "$note" ]; then
        printf '(%s)\n' "$note"
    elif [ $rc -ne 0 ]; then
        echo "(exit $rc)"; failures=$((failures + 1))
    fi
}

# The demo's messages are not valid JSON ({"message: "..."}), so its `| jq`
# prints nothing but an error, exactly as in the demo's recorded output.
JQ_NOTE="as in the demo: its message is not valid JSON, so jq rejects it; the consumer read 1 message"
# --timeout-ms ends every console consumer with a TimeoutException and exit 1.
CONSUMER_NOTE="the consumer stops after --timeout-ms, as in the demo"

step "Listing topics in \`kafka1\`" 'kafka-topics \
    --bootstrap-server localhost:29092,localhost:29093,localhost:29094 \
    --list'

for vc in london paris; do
step "Creating virtual cluster \`$vc\`" 'token=$(curl \
    --silent \
    --user '"'"'admin:conduktor'"'"' \
    --request POST "http://localhost:8888/admin/vclusters/v1/vcluster/'$vc'/username/sa" \
    --header '"'"'Content-Type: application/json'"'"' \
    --data-raw '"'"'{"lifeTimeSeconds": 7776000}'"'"' | jq -r ".token")

echo  """
bootstrap.servers=localhost:6969
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username='"'"'sa'"'"' password='"'"'$token'"'"';
""" > '$vc'-sa.properties'
done

for vc in london paris; do
step "Creating topic \`${vc}Topic\`" 'kafka-topics \
    --bootstrap-server localhost:6969 \
    --command-config '$vc'-sa.properties \
    --replication-factor 1 \
    --partitions 1 \
    --create --if-not-exists \
    --topic '$vc'Topic'
done

for vc in london paris; do
step "Listing topics in \`$vc\`" 'kafka-topics \
    --bootstrap-server localhost:6969 \
    --command-config '$vc'-sa.properties \
    --list'
done

step "Producing 1message in \`londonTopic\`" 'echo '"'"'{"message: "Hello from London"}'"'"' | \
    kafka-console-producer \
        --bootstrap-server localhost:6969 \
        --producer.config london-sa.properties \
        --topic londonTopic'

step "Consuming from \`londonTopic\`" 'kafka-console-consumer \
    --bootstrap-server localhost:6969 \
    --consumer.config london-sa.properties \
    --topic londonTopic \
    --from-beginning \
    --timeout-ms 5000 | jq' "$JQ_NOTE"

step "Producing 1message in \`parisTopic\`" 'echo '"'"'{"message: "Bonjour depuis Paris"}'"'"' | \
    kafka-console-producer \
        --bootstrap-server localhost:6969 \
        --producer.config paris-sa.properties \
        --topic parisTopic'

step "Consuming from \`parisTopic\`" 'kafka-console-consumer \
    --bootstrap-server localhost:6969 \
    --consumer.config paris-sa.properties \
    --topic parisTopic \
    --from-beginning \
    --timeout-ms 5000 | jq' "$JQ_NOTE"

step "Creating topic \`existingLondonTopic\` on \`kafka1\`" 'kafka-topics \
    --bootstrap-server localhost:29092,localhost:29093,localhost:29094 \
    --replication-factor 1 \
    --partitions 1 \
    --create --if-not-exists \
    --topic existingLondonTopic'

step "Producing 1message in \`existingLondonTopic\`" 'echo '"'"'{"message: "Hello from London"}'"'"' | \
    kafka-console-producer \
        --bootstrap-server localhost:29092,localhost:29093,localhost:29094 \
        --topic existingLondonTopic'

step "Mapping \`existingLondonTopic\` into \`london\`" 'curl \
  --silent \
  --user admin:conduktor \
  --request POST localhost:8888/admin/vclusters/v1/vcluster/london/topics/existingLondonTopic \
  --header '"'"'Content-Type: application/json'"'"' \
  --data-raw '"'"'{
      "physicalTopicName": "existingLondonTopic",
      "readOnly": false,
      "concentrated": false
    }'"'"' | jq'

step "Listing topics in \`london\`" 'kafka-topics \
    --bootstrap-server localhost:6969 \
    --command-config london-sa.properties \
    --list'

step "Creating topic \`existingSharedTopic\` on \`kafka1\`" 'kafka-topics \
    --bootstrap-server localhost:29092,localhost:29093,localhost:29094 \
    --replication-factor 1 \
    --partitions 1 \
    --create --if-not-exists \
    --topic existingSharedTopic'

step "Producing 1message in \`existingSharedTopic\`" 'echo '"'"'{"message": "Existing shared message"}'"'"' | \
    kafka-console-producer \
        --bootstrap-server localhost:29092,localhost:29093,localhost:29094 \
        --topic existingSharedTopic'

step "Mapping \`existingSharedTopic\` into \`london\`" 'curl \
  --silent \
  --request POST localhost:8888/admin/vclusters/v1/vcluster/london/topics/existingSharedTopic \
  --user admin:conduktor \
  --header '"'"'Content-Type: application/json'"'"' \
  --data-raw '"'"'{
    "physicalTopicName": "existingSharedTopic",
    "readOnly": false,
    "concentrated": false
  }'"'"' | jq'

step "Listing topics in \`london\`" 'kafka-topics \
    --bootstrap-server localhost:6969 \
    --command-config london-sa.properties \
    --list'

step "Consuming from \`existingLondonTopic\`" 'kafka-console-consumer \
    --bootstrap-server localhost:6969 \
    --consumer.config london-sa.properties \
    --topic existingLondonTopic \
    --from-beginning \
    --timeout-ms 5000 | jq' "$JQ_NOTE"

step "Consuming from \`existingSharedTopic\` in \`london\`" 'kafka-console-consumer \
    --bootstrap-server localhost:6969 \
    --consumer.config london-sa.properties \
    --topic existingSharedTopic \
    --from-beginning \
    --timeout-ms 5000 | jq' "$CONSUMER_NOTE"

step "Mapping \`existingSharedTopic\` into \`paris\`" 'curl \
  --silent \
  --user admin:conduktor \
  --request POST localhost:8888/admin/vclusters/v1/vcluster/paris/topics/existingSharedTopic \
  --header '"'"'Content-Type: application/json'"'"' \
  --data-raw '"'"'{
    "physicalTopicName": "existingSharedTopic",
    "readOnly": false,
    "concentrated": false
  }'"'"' | jq'

step "Listing topics in \`paris\`" 'kafka-topics \
    --bootstrap-server localhost:6969 \
    --command-config paris-sa.properties \
    --list'

step "Consuming from \`existingSharedTopic\` in \`paris\`" 'kafka-console-consumer \
    --bootstrap-server localhost:6969 \
    --consumer.config paris-sa.properties \
    --topic existingSharedTopic \
    --from-beginning \
    --timeout-ms 5000 | jq' "$CONSUMER_NOTE"

step "Listing topics in \`kafka1\` (the physical names)" 'kafka-topics \
    --bootstrap-server localhost:29092,localhost:29093,localhost:29094 \
    --list'

printf '\nDemo finished in %s with %d failed step(s).\n' "$workdir" "$failures"
[ "$failures" -eq 0 ]
