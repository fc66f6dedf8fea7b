package elastichash.engine;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * Runs one or more OpenSearch nodes in this JVM, bound to 127.0.0.1 (or {@code --host}), with
 * their data under {@code --home}. Node i serves HTTP on {@code --http-port + i} and transport on
 * {@code --transport-port + i}. Readiness is for the caller to poll (cluster health).
 * With {@code --only-node i} this JVM runs node i alone of an N-node cluster (the others run
 * in their own JVMs), so that one node can be killed with SIGKILL and started again on its data.
 *
 * <p>Modules are loaded from the classpath: netty4 (HTTP and transport), painless (the stored
 * Hamming script), reindex (mapping changes behind the alias) and analysis-common. Nothing
 * else the backend uses lives in a module.
 */
public final class EngineMain {

    private static final Collection<Class<? extends Plugin>> PLUGINS =
            List.of(Netty4Plugin.class, PainlessPlugin.class, CommonAnalysisPlugin.class,
                    ReindexPlugin.class);

    /** {@code Node}'s constructor that takes classpath plugins is protected. */
    private static final class EngineNode extends Node {
        EngineNode(Environment environment) {
            super(environment, PLUGINS, true);
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = parse(args);
        Path home = Path.of(required(opts, "home")).toAbsolutePath();
        int nodes = Integer.parseInt(opts.getOrDefault("nodes", "1"));
        int httpPort = Integer.parseInt(opts.getOrDefault("http-port", "9200"));
        int transportPort = Integer.parseInt(opts.getOrDefault("transport-port", "9300"));
        String cluster = opts.getOrDefault("cluster-name", "elastichash-test");
        String host = opts.getOrDefault("host", "127.0.0.1"); // 0.0.0.0 in a container
        int only = Integer.parseInt(opts.getOrDefault("only-node", "-1"));
        if (only >= nodes) {
            throw new IllegalArgumentException("--only-node " + only + " of " + nodes + " nodes");
        }

        List<String> names = new ArrayList<>();
        List<String> seeds = new ArrayList<>();
        for (int i = 0; i < nodes; i++) {
            names.add("node-" + i);
            seeds.add(("0.0.0.0".equals(host) ? "127.0.0.1" : host) + ":" + (transportPort + i));
        }

        List<Node> started = new ArrayList<>();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            for (Node node : started) {
                try {
                    node.close();
                } catch (Exception e) {
                    System.err.println("closing " + node + ": " + e);
                }
            }
        }, "engine-shutdown"));

        boolean loggingConfigured = false;
        for (int i = 0; i < nodes; i++) {
            if (only >= 0 && i != only) {
                continue;
            }
            Path nodeHome = Files.createDirectories(home.resolve(names.get(i)));
            Settings.Builder b = Settings.builder()
                    .put("cluster.name", cluster)
                    .put("node.name", names.get(i))
                    .put("path.home", nodeHome.toString())
                    .put("path.data", nodeHome.resolve("data").toString())
                    .put("path.logs", nodeHome.resolve("logs").toString())
                    .put("network.host", host)
                    .put("http.port", Integer.toString(httpPort + i))
                    .put("transport.port", Integer.toString(transportPort + i))
                    // A test machine's disk may be fuller than production watermarks allow.
                    .put("cluster.routing.allocation.disk.threshold_enabled", false)
                    .put("bootstrap.memory_lock", false)
                    .put("logger.level", opts.getOrDefault("log-level", "WARN"));
            if (nodes == 1) {
                b.put("discovery.type", "single-node");
            } else {
                b.putList("discovery.seed_hosts", seeds);
                b.putList("cluster.initial_cluster_manager_nodes", names);
            }
            // --settings k=v,k=v: node settings for a test (a tiny write queue gives real 429s).
            for (String kv : opts.getOrDefault("settings", "").split(",")) {
                if (!kv.isBlank()) {
                    String[] p = kv.split("=", 2);
                    if (p.length != 2) {
                        throw new IllegalArgumentException("--settings wants k=v,k=v: " + kv);
                    }
                    b.put(p[0].trim(), p[1].trim());
                }
            }
            Settings settings = b.build();
            if (!loggingConfigured) {
                LogConfigurator.registerErrorListener();
                LogConfigurator.configureWithoutConfig(settings);
                loggingConfigured = true;
            }
            final String name = names.get(i);
            Environment env = InternalSettingsPreparer.prepareEnvironment(
                    settings, Map.of(), null, () -> name);
            Files.createDirectories(env.modulesFile());
            Files.createDirectories(env.pluginsFile());
            Node node = new EngineNode(env);
            node.start();
            started.add(node);
            System.out.println("started " + name + " http " + host + ":" + (httpPort + i));
        }
        if (Boolean.parseBoolean(opts.getOrDefault("exit-when-started", "false"))) {
            System.exit(0); // a training run for the class-data archive; the hook closes nodes
        }
        new CountDownLatch(1).await(); // until SIGTERM; the shutdown hook closes the nodes
    }

    private static Map<String, String> parse(String[] args) {
        Map<String, String> out = new java.util.HashMap<>();
        for (int i = 0; i < args.length; i++) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("usage: --home DIR [--nodes N] [--host ADDR] [--http-port P]"
                        + " [--transport-port P] [--cluster-name NAME] [--log-level LEVEL]"
                        + " [--only-node I] [--settings k=v,k=v]"
                        + " [--exit-when-started true]");
            }
            out.put(args[i].substring(2), args[++i]);
        }
        return out;
    }

    private static String required(Map<String, String> opts, String key) {
        String v = opts.get(key);
        if (v == null) {
            throw new IllegalArgumentException("--" + key + " is required");
        }
        return v;
    }
}
