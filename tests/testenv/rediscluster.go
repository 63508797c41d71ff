package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of a test's own: masters without
// replicas, each a redis-server on free loopback ports, its files in a
// temporary directory. The processes are killed when the test ends.
type RedisCluster struct {
	// Addrs are the nodes, host:port, for REDIS_CLUSTER_ADDRS.
	Addrs []string
}

// StartRedisCluster starts masters cluster-enabled redis-servers, joins
// them into one Cluster with redis-cli --cluster create (the hash slots
// shared out evenly) and waits until every node says cluster_state:ok.
func StartRedisCluster(tb testing.TB, masters int) *RedisCluster {
	tb.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		tb.Fatalf("redis-cli is not installed (it comes with redis-server): %v", err)
	}
	dir := tb.TempDir()
	c := &RedisCluster{}
	for i := range masters {
		addr := freeLoopbackAddr(tb)
		_, busPort, _ := net.SplitHostPort(freeLoopbackAddr(tb))
		// cluster-port: the default bus port (port + 10000) may be taken.
		cmd := runRedis(tb, addr, "", "--cluster-enabled", "yes", "--cluster-port", busPort, "--dir", dir,
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", i), "--cluster-node-timeout", "2000")
		tb.Cleanup(func() { kill(cmd) })
		c.Addrs = append(c.Addrs, addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	create := exec.Command("redis-cli", append(args, "--cluster-replicas", "0", "--cluster-yes")...)
	if out, err := create.CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli --cluster create %s: %v\n%s", strings.Join(c.Addrs, " "), err, out)
	}
	Eventually(tb, 30*time.Second, c.ready)
	return c
}

// ready says whether every node sees the whole Cluster as up.
func (c *RedisCluster) ready() error {
	for _, addr := range c.Addrs {
		rc := redis.NewClient(&redis.Options{Addr: addr})
		info, err := rc.ClusterInfo(context.Background()).Result()
		rc.Close()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", len(c.Addrs))) {
			return fmt.Errorf("node %s is not ready yet:\n%s", addr, info)
		}
	}
	return nil
}

// Client is a Cluster client of the nodes, closed when the test ends.
func (c *RedisCluster) Client(tb testing.TB) *redis.ClusterClient {
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	tb.Cleanup(func() { _ = rc.Close() })
	return rc
}

// RedisSentinel is a master, one replica of it and one Sentinel watching
// them (quorum 1), each a redis-server of a test's own on free loopback
// ports, killed when the test ends. All three ask for Password. The test
// may kill the master and wait for the Sentinel to promote the replica.
type RedisSentinel struct {
	tb testing.TB
	// Password is the data nodes' and the Sentinel's (requirepass), for
	// REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD.
	Password string
	// Master is the name the Sentinel knows the master by, for
	// REDIS_SENTINEL_MASTER.
	Master string
	// Addr is the Sentinel's host:port, for REDIS_SENTINEL_ADDRS.
	Addr string
	// MasterAddr and ReplicaAddr are the data nodes as started.
	MasterAddr, ReplicaAddr string

	master, replica, sentinel *exec.Cmd
}

// StartRedisSentinel starts the master, its replica and the Sentinel, and
// waits until the replica is in sync and the Sentinel knows it.
func StartRedisSentinel(tb testing.TB) *RedisSentinel {
	tb.Helper()
	dir := tb.TempDir()
	s := &RedisSentinel{tb: tb, Master: "allocation-master", Password: RandomName("pw"),
		MasterAddr: freeLoopbackAddr(tb), ReplicaAddr: freeLoopbackAddr(tb), Addr: freeLoopbackAddr(tb)}
	// The replica becomes the master: both ask for the password and give it.
	auth := []string{"--dir", dir, "--requirepass", s.Password, "--masterauth", s.Password}
	s.master = runRedis(tb, s.MasterAddr, "", auth...)
	tb.Cleanup(func() { kill(s.master) })
	host, port, _ := net.SplitHostPort(s.MasterAddr)
	s.replica = runRedis(tb, s.ReplicaAddr, "", append(auth, "--replicaof", host, port)...)
	tb.Cleanup(func() { kill(s.replica) })
	// The Sentinel rewrites its file: it must be one of its own.
	conf := filepath.Join(dir, "sentinel.conf")
	settings := fmt.Sprintf("sentinel monitor %[1]s %[2]s %[3]s 1\n"+
		"sentinel down-after-milliseconds %[1]s 1000\n"+
		"sentinel failover-timeout %[1]s 5000\n"+
		"sentinel auth-pass %[1]s %[4]s\n"+
		"requirepass %[4]s\n", s.Master, host, port, s.Password)
	if err := os.WriteFile(conf, []byte(settings), 0o600); err != nil {
		tb.Fatal(err)
	}
	s.sentinel = runRedis(tb, s.Addr, conf, "--sentinel", "--dir", dir)
	tb.Cleanup(func() { kill(s.sentinel) })
	Eventually(tb, 30*time.Second, s.replicaKnown)
	return s
}

// replicaKnown says whether the replica is in sync with the master and
// the Sentinel lists it as a replica it could promote.
func (s *RedisSentinel) replicaKnown() error {
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: s.ReplicaAddr, Password: s.Password})
	defer rc.Close()
	info, err := rc.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "master_link_status:up") {
		return fmt.Errorf("replica %s not in sync yet", s.ReplicaAddr)
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, Password: s.Password})
	defer sc.Close()
	replicas, err := sc.Replicas(ctx, s.Master).Result()
	if err != nil {
		return err
	}
	for _, r := range replicas {
		if net.JoinHostPort(r["ip"], r["port"]) == s.ReplicaAddr && r["flags"] == "slave" {
			return nil
		}
	}
	return fmt.Errorf("the sentinel does not list replica %s yet: %v", s.ReplicaAddr, replicas)
}

// Client is a failover client of the master, through the Sentinel, closed
// when the test ends.
func (s *RedisSentinel) Client(tb testing.TB) *redis.Client {
	rc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.Master, SentinelAddrs: []string{s.Addr},
		Password: s.Password, SentinelPassword: s.Password})
	tb.Cleanup(func() { _ = rc.Close() })
	return rc
}

// KillMaster kills the master's process (SIGKILL: no shutdown). The
// Sentinel notices within a second and promotes the replica.
func (s *RedisSentinel) KillMaster() { kill(s.master) }

// FailedOver says whether the Sentinel names the replica as the master and
// the replica answers as one; the error says what is not so yet.
func (s *RedisSentinel) FailedOver() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, Password: s.Password})
	defer sc.Close()
	addr, err := sc.GetMasterAddrByName(ctx, s.Master).Result()
	if err != nil {
		return err
	}
	if got := net.JoinHostPort(addr[0], addr[1]); got != s.ReplicaAddr {
		return fmt.Errorf("the sentinel still names %s as the master", got)
	}
	rc := redis.NewClient(&redis.Options{Addr: s.ReplicaAddr, Password: s.Password})
	defer rc.Close()
	role, err := rc.Do(ctx, "ROLE").Slice()
	if err != nil {
		return err
	}
	if len(role) == 0 || role[0] != "master" {
		return fmt.Errorf("replica %s answers ROLE %v", s.ReplicaAddr, role)
	}
	return nil
}

// AwaitFailover waits, up to within, until FailedOver says so, and fails
// the test otherwise.
func (s *RedisSentinel) AwaitFailover(within time.Duration) {
	s.tb.Helper()
	Eventually(s.tb, within, s.FailedOver)
}

// kill ends a redis-server with SIGKILL (thawing it first, should it be
// frozen) and reaps it; a process already gone is left alone.
func kill(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}
