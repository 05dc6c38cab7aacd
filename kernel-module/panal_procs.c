// SPDX-License-Identifier: GPL-2.0
/*
 * panal_procs - process state summary for the Panal node.
 *
 * Creates /proc/panal_procs (mode 0444). Each read returns one JSON object
 * on a single line with the number of processes per scheduler state, the
 * number of threads, the kernel release and a collection timestamp:
 *
 *   {"total":N,"running":N,"sleeping":N,"disk_sleep":N,"stopped":N,
 *    "traced":N,"zombie":N,"dead":N,"idle":N,"threads":N,
 *    "kernel_version":"...","collected_ns":N}
 *
 * The counts are meant to be identical to what a userspace scan of
 * /proc/[pid]/stat yields, so that the Panal node can use either source
 * interchangeably:
 *   - "total" counts thread-group leaders, i.e. the numeric entries of /proc;
 *   - each process is classified by the state letter /proc/[pid]/stat shows
 *     for its group leader (R S D T t Z X I). task_state_index() is the
 *     helper fs/proc/array.c uses for that letter, so we use it too instead
 *     of testing state bits ourselves. Parked kthreads ("P") count towards
 *     "total" only, as there is no field for them;
 *   - "threads" counts every task (thread) of every process.
 *
 * Only the initial PID namespace matters here: the module walks all tasks,
 * which is what /proc shows when mounted from the initial namespace.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/seq_file.h>
#include <linux/string.h>
#include <linux/timekeeping.h>
#include <linux/utsname.h>

#define PANAL_PROCS_NAME	"panal_procs"

/* One slot per index task_state_index() can return ("RSDTtXZPI"). */
#define PANAL_NR_STATES		(1 + ilog2(TASK_REPORT_MAX))

struct panal_counts {
	u64 total;
	u64 threads;
	u64 by_state[PANAL_NR_STATES];
};

static struct proc_dir_entry *panal_procs_entry;

static void panal_collect(struct panal_counts *c)
{
	struct task_struct *p, *t;
	unsigned int idx;

	memset(c, 0, sizeof(*c));

	/*
	 * The task list and each thread list are RCU-protected, which is
	 * enough for a statistics snapshot: we never sleep or dereference
	 * anything beyond the task_structs themselves, and we do not need a
	 * consistent view against concurrent fork/exit (a userspace scan of
	 * /proc races the same way).
	 */
	rcu_read_lock();
	for_each_process(p) {
		c->total++;

		/*
		 * Same classification as /proc/[pid]/stat: READ_ONCE() of
		 * ->__state combined with ->exit_state, so a zombie or dead
		 * group leader is reported as Z/X and TASK_IDLE as I.
		 */
		idx = task_state_index(p);
		if (idx < ARRAY_SIZE(c->by_state))
			c->by_state[idx]++;

		for_each_thread(p, t)
			c->threads++;
	}
	rcu_read_unlock();
}

/* Sum the slots whose /proc state letter is @letter. */
static u64 panal_count(const struct panal_counts *c, char letter)
{
	unsigned int i;
	u64 n = 0;

	for (i = 0; i < ARRAY_SIZE(c->by_state); i++)
		if (task_index_to_char(i) == letter)
			n += c->by_state[i];
	return n;
}

/*
 * Emit @s as a JSON string. The release string is plain ASCII in practice,
 * but it is set at build time, so escape anything JSON would reject; bytes
 * outside printable ASCII become \u00XX so the output is always valid UTF-8.
 */
static void panal_seq_json_string(struct seq_file *m, const char *s,
				  size_t max)
{
	size_t i;

	seq_putc(m, '"');
	for (i = 0; i < max && s[i]; i++) {
		unsigned char ch = s[i];

		if (ch == '"' || ch == '\\')
			seq_printf(m, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			seq_printf(m, "\\u%04x", ch);
		else
			seq_putc(m, ch);
	}
	seq_putc(m, '"');
}

static int panal_procs_show(struct seq_file *m, void *v)
{
	struct new_utsname *uts = utsname();
	struct panal_counts c;
	u64 now;

	panal_collect(&c);
	/* CLOCK_REALTIME, ns since the Unix epoch, taken right after the scan. */
	now = ktime_get_real_ns();

	seq_printf(m,
		   "{\"total\":%llu,\"running\":%llu,\"sleeping\":%llu,\"disk_sleep\":%llu,\"stopped\":%llu,\"traced\":%llu,\"zombie\":%llu,\"dead\":%llu,\"idle\":%llu,\"threads\":%llu,",
		   c.total, panal_count(&c, 'R'), panal_count(&c, 'S'),
		   panal_count(&c, 'D'), panal_count(&c, 'T'),
		   panal_count(&c, 't'), panal_count(&c, 'Z'),
		   panal_count(&c, 'X'), panal_count(&c, 'I'), c.threads);

	/*
	 * ->release never changes after boot (only nodename and domainname
	 * are writable), so it can be read without uts_sem.
	 */
	seq_puts(m, "\"kernel_version\":");
	panal_seq_json_string(m, uts->release, sizeof(uts->release));
	seq_printf(m, ",\"collected_ns\":%llu}\n", now);

	return 0;
}

static int panal_procs_open(struct inode *inode, struct file *file)
{
	return single_open(file, panal_procs_show, NULL);
}

static const struct proc_ops panal_procs_ops = {
	.proc_open	= panal_procs_open,
	.proc_read	= seq_read,
	.proc_lseek	= seq_lseek,
	.proc_release	= single_release,
};

static int __init panal_procs_init(void)
{
	panal_procs_entry = proc_create(PANAL_PROCS_NAME, 0444, NULL,
					&panal_procs_ops);
	if (!panal_procs_entry) {
		pr_err("cannot create /proc/%s\n", PANAL_PROCS_NAME);
		return -ENOMEM;
	}
	return 0;
}

static void __exit panal_procs_exit(void)
{
	/* Waits for readers still inside our proc_ops before returning. */
	proc_remove(panal_procs_entry);
}

module_init(panal_procs_init);
module_exit(panal_procs_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Panal project");
MODULE_DESCRIPTION("Process and thread state counts as JSON in /proc/panal_procs");
MODULE_VERSION("0.1.0");
