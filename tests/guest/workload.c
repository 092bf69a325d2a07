/*
 * vmckpt test-guest workload (static; runs under the initramfs /init).
 *
 * Parameters come from /proc/cmdline, or from argv when any are given
 * (e.g. "./workload wl.mem=16" for a native run):
 *   wl.mem=MIB            memory to fill (default 64)
 *   wl.dirty=PCT          percent of pages rewritten per second (default 10)
 *   wl.marker=STRING      marker written into every Nth page (default none)
 *   wl.marker_every=N     N for wl.marker (default 16)
 *   wl.profile=mixed|random  page contents (default mixed: see gen_page)
 *   wl.disk=DEV           keep a journal on block device DEV (e.g. /dev/vda)
 *
 * Every 4 KiB page = header {magic, index, generation, boot id} followed by
 * contents derived from (boot id, index, generation) (see gen_page), with the marker
 * (if any) at byte 32 of every Nth page.  Generations are kept in a separate
 * array, so every page can be re-derived and compared.
 *
 * Console protocol (one line each, all prefixed "VMCKPT-WL boot=<id>"):
 *   start mem=.. dirty=.. pages=..            once
 *   ready pages=N bad=K result=OK|BAD [first=I] fill_ms=F ms=T  (fill + check)
 *   count=N gen=G ok|BAD                      every ~0.5 s, N += 1 each line
 *   check pages=N bad=K result=OK|BAD [first=I] reason=R ms=T
 *   disk seq=S ondisk=D inflight=I blocks=B result=OK|BAD [why=W]
 *                                             with every check (wl.disk)
 * The disk journal: a ring of 256 blocks of 4 KiB at the start of DEV,
 * written with O_DIRECT|O_DSYNC, block s % 256 holding sequence s (magic,
 * seq, FNV-1a checksum, contents derived from s).  Memory keeps S, the
 * last sequence whose write returned, and I, the one being written.  The
 * check reads the ring from the device (not the page cache): it passes
 * when every block holds what the journal up to the newest one on disk
 * (D) must hold, and D is S (or I: a write that reached the disk just as
 * the memory was captured).  A disk that moved on after the memory was
 * captured shows D > I; one from before it, D < S.
 * A "corrupt" line on stdin flips one byte (to test the BAD path); a
 * "panic" line crashes the guest kernel (sysrq c), a "reboot" line resets
 * it at once (sysrq b): a guest that dies.
 * A full check runs on: a "check" line on stdin, SIGUSR1, a loop gap > 2 s,
 * a CLOCK_REALTIME/CLOCK_BOOTTIME jump against CLOCK_MONOTONIC, or the RTC
 * (/sys/class/rtc/rtc0/since_epoch, host-clock driven under QEMU) getting
 * ahead of CLOCK_MONOTONIC by > 1 s: the only signal that fires under QEMU
 * (guest clocks stop while the VM is stopped); catches pauses >= 2 s.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define MAGIC 0x4c575450434b4d56ull /* "VMCKPTWL" little-endian */

static uint64_t boot_id, npages, total_gen, count;
static uint32_t *gens;
static unsigned char *mem;
static char marker[256];
static uint64_t marker_every = 16;
static volatile sig_atomic_t got_usr1;
static int any_bad;

static void say(const char *fmt, ...)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "VMCKPT-WL boot=%016llx ",
			 (unsigned long long)boot_id);
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	for (char *p = buf; n > 0;) {
		ssize_t w = write(1, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		p += w, n -= w;
	}
}

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static int profile_random;      /* wl.profile=random: every page random */

static const char *const words[] = {
	"the ", "kernel ", "struct ", "page ", "return ", "int ", "if (", ") {\n",
	"memory ", "domain ", "vcpu ", "0x", "ffff", "static ", "void ", "error ",
	"buffer ", "= NULL;\n", "for (i = 0; ", "i < n; i++)", "\t", "}\n",
	"unsigned long ", "/usr/lib/", "libc.so.6", "GET / HTTP/1.1\r\n",
	"<div class=\"", "\">", "SELECT * FROM ", " WHERE id = ", "\x48\x89\xe5",
	"\xe8\x00\x00\x00\x00",
};

/* Write the expected contents of page idx at generation gen into dst.
 * Like real guest memory (labs.md: zstd -1 ~0.5), a page is, by a hash of
 * (boot, idx, gen): 35% zero after its header, 40% text/code-like words,
 * 25% random (wl.profile=random: all random, the worst case). */
static void gen_page(uint64_t *dst, uint64_t idx, uint32_t gen)
{
	uint64_t s = splitmix(boot_id ^ splitmix(idx * 0x100000001b3ull + gen)) | 1;
	unsigned kind = profile_random ? 99 : (unsigned)(s % 100);

	dst[0] = MAGIC, dst[1] = idx, dst[2] = gen, dst[3] = boot_id;
	if (kind < 35) {
		memset(dst + 4, 0, PAGE - 32);
	} else if (kind < 75) {
		char *c = (char *)(dst + 4);
		size_t off = 0, cap = PAGE - 32;
		while (off < cap) {
			const char *w;
			size_t l;
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			w = words[s % (sizeof(words) / sizeof(words[0]))];
			l = strlen(w);
			if (l > cap - off)
				l = cap - off;
			memcpy(c + off, w, l);
			off += l;
		}
	} else {
		for (unsigned i = 4; i < WORDS; i++) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			dst[i] = s;
		}
	}
	if (marker[0] && idx % marker_every == 0)
		memcpy(dst + 4, marker, strlen(marker));
}

static double now(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Re-check every page; returns number of bad pages, *first = first bad. */
static uint64_t check_all(uint64_t *first)
{
	static uint64_t exp[WORDS];
	uint64_t bad = 0;
	*first = UINT64_MAX;
	for (uint64_t i = 0; i < npages; i++) {
		gen_page(exp, i, gens[i]);
		if (memcmp(exp, mem + i * PAGE, PAGE)) {
			if (!bad++)
				*first = i;
		}
	}
	return bad;
}

/* ---- the disk journal ---- */
#define DBLK 4096
#define DRING 256
#define DMAGIC 0x4b5349444b434d56ull /* "VMCKDISK" little-endian */
static int disk_fd = -1;
static char disk_dev[64];
static uint64_t disk_seq, disk_inflight;
static uint64_t *dbuf, *dring;

static uint64_t fnv(const uint64_t *b)
{
	uint64_t h = 0xcbf29ce484222325ull;
	const unsigned char *p = (const unsigned char *)b;
	for (size_t i = 0; i < DBLK; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static void dblk_fill(uint64_t *b, uint64_t seq)
{
	uint64_t x = splitmix(seq ^ 0xd15cull);
	b[0] = DMAGIC, b[1] = seq, b[2] = 0;
	for (size_t i = 3; i < DBLK / 8; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		b[i] = (i & 7) < 3 ? x : (seq << 8 | i); /* mixed: part compressible */
	}
	b[2] = fnv(b);
}

/* The sequence block b holds: 0 when empty, -1 when damaged. */
static int64_t dblk_seq(uint64_t *b)
{
	uint64_t sum = b[2], want[DBLK / 8];
	int empty = 1;
	for (size_t i = 0; i < DBLK / 8 && empty; i++)
		empty = !b[i];
	if (empty)
		return 0;
	if (b[0] != DMAGIC)
		return -1;
	b[2] = 0;
	int ok = fnv(b) == sum;
	b[2] = sum;
	dblk_fill(want, b[1]);
	return ok && !memcmp(want, b, DBLK) ? (int64_t)b[1] : -1;
}

/* Reads the ring; *max: the newest sequence on disk; NULL or why. */
static const char *disk_scan(uint64_t *max, uint64_t *blocks)
{
	*max = 0, *blocks = 0;
	if (pread(disk_fd, dring, DBLK * DRING, 0) != DBLK * DRING)
		return "read";
	for (size_t i = 0; i < DRING; i++) {
		int64_t q = dblk_seq(dring + i * DBLK / 8);
		if (q < 0)
			return "damaged";
		if (q && (uint64_t)q % DRING != i)
			return "misplaced";
		if (q) {
			(*blocks)++;
			if ((uint64_t)q > *max)
				*max = (uint64_t)q;
		}
	}
	/* slot i holds the newest q <= max with q % DRING == i */
	for (size_t i = 0; i < DRING; i++) {
		uint64_t want = *max >= i ? *max - (*max - i) % DRING : 0;
		int64_t q = dblk_seq(dring + i * DBLK / 8);
		if ((uint64_t)q != want && !(want == 0 && q == 0))
			return "gap";
	}
	return NULL;
}

static void disk_open(void)
{
	uint64_t max, blocks;
	const char *why;
	for (int i = 0; i < 100 && disk_fd < 0; i++) {
		disk_fd = open(disk_dev, O_RDWR | O_DIRECT | O_DSYNC);
		if (disk_fd < 0)
			usleep(50000);
	}
	if (disk_fd < 0 || posix_memalign((void **)&dbuf, DBLK, DBLK) ||
	    posix_memalign((void **)&dring, DBLK, DBLK * DRING)) {
		say("disk dev=%s result=BAD why=open:%s", disk_dev, strerror(errno));
		any_bad = 1;
		disk_fd = -1;
		return;
	}
	if ((why = disk_scan(&max, &blocks))) {
		say("disk dev=%s result=BAD why=%s", disk_dev, why);
		any_bad = 1;
	}
	disk_seq = max;
	say("disk dev=%s journal from seq=%llu", disk_dev, (unsigned long long)max);
}

static void disk_write(void)
{
	if (disk_fd < 0)
		return;
	disk_inflight = disk_seq + 1;
	dblk_fill(dbuf, disk_inflight);
	if (pwrite(disk_fd, dbuf, DBLK, (off_t)(disk_inflight % DRING) * DBLK) != DBLK) {
		say("disk write seq=%llu failed: %s result=BAD",
		    (unsigned long long)disk_inflight, strerror(errno));
		any_bad = 1;
		close(disk_fd);
		disk_fd = -1;
		return;
	}
	disk_seq = disk_inflight;
	disk_inflight = 0;
}

static void disk_check(void)
{
	uint64_t max, blocks;
	const char *why;
	if (disk_fd < 0)
		return;
	why = disk_scan(&max, &blocks);
	if (!why && max != disk_seq && !(disk_inflight && max == disk_inflight))
		why = max > disk_seq ? "disk-ahead-of-memory" : "disk-behind-memory";
	if (why)
		any_bad = 1;
	say("disk seq=%llu ondisk=%llu inflight=%llu blocks=%llu result=%s%s%s",
	    (unsigned long long)disk_seq, (unsigned long long)max,
	    (unsigned long long)disk_inflight, (unsigned long long)blocks,
	    why ? "BAD" : "OK", why ? " why=" : "", why ? why : "");
}

static void run_check(const char *what, const char *tail)
{
	uint64_t first;
	double t0 = now(CLOCK_MONOTONIC);
	uint64_t bad = check_all(&first);
	double ms = (now(CLOCK_MONOTONIC) - t0) * 1e3;
	char extra[64] = "";
	if (bad) {
		any_bad = 1;
		snprintf(extra, sizeof extra, " first=%llu", (unsigned long long)first);
	}
	say("%s pages=%llu bad=%llu result=%s%s %s ms=%.0f", what,
	    (unsigned long long)npages, (unsigned long long)bad,
	    bad ? "BAD" : "OK", extra, tail, ms);
	disk_check();
}

static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }

static void set_param(const char *tok, unsigned long *mib, unsigned long *pct)
{
	const char *v = strchr(tok, '=');
	if (!v)
		return;
	size_t k = v++ - tok;
	if (k == 6 && !strncmp(tok, "wl.mem", 6))
		*mib = strtoul(v, NULL, 0);
	else if (k == 8 && !strncmp(tok, "wl.dirty", 8))
		*pct = strtoul(v, NULL, 0);
	else if (k == 7 && !strncmp(tok, "wl.disk", 7))
		snprintf(disk_dev, sizeof disk_dev, "%s", v);
	else if (k == 10 && !strncmp(tok, "wl.profile", 10))
		profile_random = !strcmp(v, "random");
	else if (k == 15 && !strncmp(tok, "wl.marker_every", 15))
		marker_every = strtoull(v, NULL, 0);
	else if (k == 9 && !strncmp(tok, "wl.marker", 9)) {
		if (*v == '"')
			v++;
		snprintf(marker, sizeof marker, "%s", v);
		size_t n = strlen(marker);
		if (n && marker[n - 1] == '"')
			marker[n - 1] = 0;
	}
}

/* Host-clock RTC seconds (QEMU's default -rtc clock=host), or -1. */
static double rtc_seconds(void)
{
	char b[32];
	int fd = open("/sys/class/rtc/rtc0/since_epoch", O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, b, sizeof b - 1);
	close(fd);
	if (n <= 0)
		return -1;
	b[n] = 0;
	return strtod(b, NULL);
}

int main(int argc, char **argv)
{
	unsigned long mib = 64, pct = 10;
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			set_param(argv[i], &mib, &pct);
	} else {
		static char cl[4096];
		int fd = open("/proc/cmdline", O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, cl, sizeof cl - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n > 0) {
			cl[n] = 0;
			for (char *s, *t = strtok_r(cl, " \t\n", &s); t;
			     t = strtok_r(NULL, " \t\n", &s))
				set_param(t, &mib, &pct);
		}
	}
	if (!mib || pct > 100 || !marker_every) {
		fprintf(stderr, "workload: bad wl.mem/wl.dirty/wl.marker_every\n");
		return 2;
	}

	if (getrandom(&boot_id, sizeof boot_id, GRND_NONBLOCK) != sizeof boot_id) {
		int fd = open("/dev/urandom", O_RDONLY);
		if (fd < 0 || read(fd, &boot_id, sizeof boot_id) != sizeof boot_id)
			boot_id = splitmix((uint64_t)(now(CLOCK_REALTIME) * 1e9) ^ getpid());
		if (fd >= 0)
			close(fd);
	}

	npages = (uint64_t)mib << 20 >> 12;
	mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	gens = calloc(npages, sizeof *gens);
	if (mem == MAP_FAILED || !gens) {
		fprintf(stderr, "workload: cannot allocate %lu MiB\n", mib);
		return 1;
	}

	/* stdin: non-blocking, no echo (keep line mode) */
	struct termios tio;
	if (tcgetattr(0, &tio) == 0) {
		tio.c_lflag &= ~(ECHO | ECHONL);
		tio.c_lflag |= ICANON;
		tcsetattr(0, TCSANOW, &tio);
	}
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigaction(SIGUSR1, &sa, NULL);

	say("start mem=%lu dirty=%lu pages=%llu marker=%s every=%llu", mib, pct,
	    (unsigned long long)npages, marker[0] ? marker : "-",
	    (unsigned long long)marker_every);
	if (disk_dev[0])
		disk_open();
	double t0 = now(CLOCK_MONOTONIC);
	for (uint64_t i = 0; i < npages; i++)
		gen_page((uint64_t *)(mem + i * PAGE), i, 0);
	double fill_ms = (now(CLOCK_MONOTONIC) - t0) * 1e3;
	char tail[64];
	snprintf(tail, sizeof tail, "fill_ms=%.0f", fill_ms);
	run_check("ready", tail);

	uint64_t rng = splitmix(boot_id ^ 0x5eed);
	double m = now(CLOCK_MONOTONIC), last_m = m;
	double rt_off = now(CLOCK_REALTIME) - m, bt_off = now(CLOCK_BOOTTIME) - m;
	double rtc = rtc_seconds(), rtc_off = rtc >= 0 ? rtc - m : 0;
	double next_print = m + 0.5, debt = 0;
	char line[256];
	size_t llen = 0;
	int in_fd = 0;

	for (;;) {
		struct pollfd pfd = { .fd = in_fd, .events = POLLIN };
		const char *reason = NULL;

		if (poll(&pfd, 1, 50) > 0) {
			char b[256];
			ssize_t n;
			while ((n = read(0, b, sizeof b)) > 0) {
				for (ssize_t i = 0; i < n; i++) {
					if (b[i] != '\n' && b[i] != '\r') {
						if (llen < sizeof line - 1)
							line[llen++] = b[i];
						continue;
					}
					line[llen] = 0, llen = 0;
					if (!strcmp(line, "check"))
						reason = "console";
					else if (!strcmp(line, "corrupt")) {
						/* test hook: flip one byte */
						mem[(npages / 2) * PAGE + 100] ^= 1;
						say("corrupted page=%llu",
						    (unsigned long long)(npages / 2));
					} else if (!strcmp(line, "panic") ||
						   !strcmp(line, "reboot")) {
						/* test hook: the guest kernel crashes
						 * (sysrq c) or resets at once (sysrq b,
						 * as a triple fault ends on Xen) */
						int fd = open("/proc/sysrq-trigger", O_WRONLY);
						say("%s on request", line);
						if (fd >= 0 &&
						    write(fd, line[0] == 'p' ? "c" : "b", 1) < 0)
							say("sysrq-trigger: %s", strerror(errno));
						if (fd >= 0)
							close(fd);
					}
				}
			}
			if (n == 0 || (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)))
				in_fd = -1; /* EOF: stop reading stdin */
		}
		if (got_usr1)
			got_usr1 = 0, reason = "sigusr1";

		m = now(CLOCK_MONOTONIC);
		double r = now(CLOCK_REALTIME) - m, bt = now(CLOCK_BOOTTIME) - m;
		if (m - last_m > 2.0)
			reason = "gap";
		else if (r - rt_off > 1.0 || r - rt_off < -1.0)
			reason = "realtime";
		else if (bt - bt_off > 1.0)
			reason = "boottime";
		rt_off = r, bt_off = bt;

		/* rewrite wl.dirty % of pages per second, at random */
		double dt = m - last_m;
		if (dt > 1.0)
			dt = 1.0;
		debt += npages * (pct / 100.0) * dt;
		for (; debt >= 1.0; debt -= 1.0) {
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			uint64_t i = rng % npages;
			gen_page((uint64_t *)(mem + i * PAGE), i, ++gens[i]);
			total_gen++;
		}
		last_m = m;
		disk_write();

		if (m >= next_print) {
			if (rtc >= 0 && (rtc = rtc_seconds()) >= 0) {
				/* off is in (c-1, c] for the true offset c (1 s RTC
				 * resolution); rtc_off tracks max(off) ~ c, decaying
				 * slowly to follow clock drift. A pause of P >= 2 s
				 * shows as off - rtc_off > 1. */
				double off = rtc - m;
				if (off - rtc_off > 1.0 || off - rtc_off < -2.0) {
					reason = reason ? reason : "rtc";
					rtc_off = off;
				} else if (off > rtc_off - 0.002) {
					rtc_off = off;
				} else {
					rtc_off -= 0.002;
				}
			}
			say("count=%llu gen=%llu %s", (unsigned long long)count++,
			    (unsigned long long)total_gen, any_bad ? "BAD" : "ok");
			next_print += 0.5;
			if (next_print < m)
				next_print = m + 0.5;
		}
		if (reason) {
			char tail[64];
			snprintf(tail, sizeof tail, "reason=%s", reason);
			run_check("check", tail);
			last_m = now(CLOCK_MONOTONIC);
		}
	}
}
