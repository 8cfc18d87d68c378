package io.textpulse.es;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.apache.logging.log4j.core.LoggerContext;
import org.apache.logging.log4j.core.config.Configurator;
import org.elasticsearch.cluster.ClusterName;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.PluginsLoader;

import java.io.PrintStream;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Starts one Elasticsearch node in this JVM from the jars that Elasticsearch publishes on Maven Central.
 *
 * <p>Why it exists: the stock distribution (tarball with its server-cli, keystore tool and entitlement agent) is not
 * published on any registry this project may use, but the server, its libraries and the transport-netty4 module are.
 * This class does what {@code org.elasticsearch.bootstrap.Elasticsearch} does in its three init phases, minus what
 * needs the missing CLI/agent: it reads {@code elasticsearch.yml} from the config directory with the same
 * {@code InternalSettingsPreparer}, configures logging with the same {@code LogConfigurator}, loads the modules from
 * {@code $ES_HOME/modules} with the same {@code PluginsLoader} (each module in its own Java module layer), then
 * constructs and starts the real {@link Node}.
 *
 * <p>Left out on purpose (documented in deploy/elasticsearch/README.md): the entitlement agent (sandboxing of
 * plugins), system call filters / mlockall, the keystore (no secure settings), and the production bootstrap checks
 * (they are skipped for a loopback-only node in the stock server too).
 *
 * <p>Usage: {@code java --module-path $ES_HOME/lib --add-modules ALL-MODULE-PATH -cp launcher.jar
 * io.textpulse.es.NodeLauncher --home H --config C [-Ekey=value ...]}
 */
public final class NodeLauncher {

    private static final CountDownLatch STOPPED = new CountDownLatch(1);
    private static final long CLOSE_TIMEOUT_SECONDS = 20;

    private NodeLauncher() {}

    public static void main(String[] args) throws Exception {
        final PrintStream err = System.err;
        final Map<String, String> overrides = new HashMap<>();
        Path home = null;
        Path config = null;
        for (int i = 0; i < args.length; i++) {
            final String arg = args[i];
            if (arg.equals("--home") && i + 1 < args.length) {
                home = Path.of(args[++i]).toAbsolutePath();
            } else if (arg.equals("--config") && i + 1 < args.length) {
                config = Path.of(args[++i]).toAbsolutePath();
            } else if (arg.startsWith("-E") && arg.indexOf('=') > 2) {
                overrides.put(arg.substring(2, arg.indexOf('=')), arg.substring(arg.indexOf('=') + 1));
            } else {
                err.println("usage: NodeLauncher --home ES_HOME --config CONFIG_DIR [-Ekey=value ...]; bad argument: " + arg);
                System.exit(64);
            }
        }
        if (home == null || config == null) {
            err.println("usage: NodeLauncher --home ES_HOME --config CONFIG_DIR [-Ekey=value ...]");
            System.exit(64);
        }

        final Node node;
        try {
            // The ES logging facade must exist before settings parsing touches x-content (the stock CLI process does this).
            LogConfigurator.configureESLogging();
            LogConfigurator.registerErrorListener();
            // Same order as the stock bootstrap: settings first, then logging, then anything that logs.
            final Settings input = Settings.builder().put(Environment.PATH_HOME_SETTING.getKey(), home.toString()).build();
            final Environment env = InternalSettingsPreparer.prepareEnvironment(input, overrides, config, () -> "textpulse-es");
            LogConfigurator.setClusterName(ClusterName.CLUSTER_NAME_SETTING.get(env.settings()).value());
            LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(env.settings()));
            LogConfigurator.configure(env, true);
            final Logger logger = LogManager.getLogger(NodeLauncher.class);
            logger.info(
                "textpulse launcher: home [{}], config [{}], JVM [{} {}]",
                home,
                config,
                System.getProperty("java.vendor"),
                Runtime.version()
            );

            // Like the stock ElasticsearchUncaughtExceptionHandler: a fatal error in any thread ends the process, since a
            // node that lost a thread to an Error is in an unknown state.
            Thread.setDefaultUncaughtExceptionHandler(NodeLauncher::onUncaught);

            final PluginsLoader pluginsLoader = PluginsLoader.createPluginsLoader(
                PluginsLoader.loadModulesBundles(env.modulesDir()),
                PluginsLoader.loadPluginsBundles(env.pluginsDir()),
                Map.of()
            );
            node = new Node(env, pluginsLoader);
            Runtime.getRuntime().addShutdownHook(new Thread(() -> shutdown(node), "textpulse-es-shutdown"));
            node.start();
            logger.info("textpulse launcher: node started");
        } catch (Throwable t) {
            // Anything this early must be visible in the start script's output and must fail the process.
            t.printStackTrace(err);
            err.flush();
            Runtime.getRuntime().halt(1);
            return;
        }
        // Node threads are daemons in places; keep the JVM alive until the shutdown hook has closed the node.
        STOPPED.await();
    }

    private static void onUncaught(Thread thread, Throwable t) {
        final Logger logger = LogManager.getLogger(NodeLauncher.class);
        if (t instanceof Error) {
            logger.fatal("fatal error in thread [" + thread.getName() + "], exiting", t);
            System.err.println("fatal error in thread [" + thread.getName() + "], exiting: " + t);
            Runtime.getRuntime().halt(1);
        }
        logger.error("uncaught exception in thread [" + thread.getName() + "]", t);
    }

    /** Mirrors Elasticsearch.shutdown(): drain, close, wait, then flush the logs. */
    private static void shutdown(Node node) {
        final Logger logger = LogManager.getLogger(NodeLauncher.class);
        try {
            node.prepareForClose();
            node.close();
            if (node.awaitClose(CLOSE_TIMEOUT_SECONDS, TimeUnit.SECONDS) == false) {
                logger.warn("node did not stop within {}s; outstanding tasks may be cut short", CLOSE_TIMEOUT_SECONDS);
            }
        } catch (Exception e) {
            logger.error("failure while shutting down the node", e);
        } finally {
            Configurator.shutdown((LoggerContext) org.apache.logging.log4j.LogManager.getContext(false));
            STOPPED.countDown();
        }
    }
}
