// CreateTopics creates topics on the local broker for scripts/kafka-local.sh create-topic, with the
// Admin API of the kafka-clients jar the broker already ships (the broker runs with
// auto.create.topics.enable=false, and no Kafka CLI tools are fetched).
// Run as a single-file program: java -cp "libs/*" CreateTopics.java BOOTSTRAP NAME:PARTITIONS...
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopics {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: CreateTopics BOOTSTRAP NAME:PARTITIONS...");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        List<NewTopic> topics = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            String[] f = args[i].split(":", 2);
            int partitions = f.length > 1 ? Integer.parseInt(f[1]) : 1;
            topics.add(new NewTopic(f[0], partitions, (short) 1));
        }
        int failed = 0;
        try (Admin admin = Admin.create(props)) {
            for (Map.Entry<String, KafkaFuture<Void>> e : admin.createTopics(topics).values().entrySet()) {
                try {
                    e.getValue().get(30, TimeUnit.SECONDS);
                    System.out.println("created " + e.getKey());
                } catch (ExecutionException x) {
                    if (x.getCause() instanceof TopicExistsException) {
                        System.out.println("exists " + e.getKey());
                    } else {
                        System.err.println("failed " + e.getKey() + ": " + x.getCause());
                        failed++;
                    }
                }
            }
        }
        System.exit(failed == 0 ? 0 : 1);
    }
}
