import socket, struct, sys, time, os, subprocess, re
N=int(sys.argv[1]); port=int(sys.argv[2]); pid=int(sys.argv[3])
def rss(): return int(re.search(r'VmRSS:\s+(\d+)', open(f'/proc/{pid}/status').read()).group(1))
body=bytes([1,1,1])+b'x'+bytes([0,0])
frame=struct.pack('<IBBHQ', 12+len(body), 1, 0, 0, 1)+body
time.sleep(0.5); before=rss(); socks=[]
for i in range(N):
    s=socket.create_connection(('127.0.0.1',port)); s.sendall(frame); socks.append(s)
for s in socks:
    s.settimeout(10); s.recv(256)
time.sleep(1); after=rss()
print(f"{N} idle handshaken connections: RSS {before} KiB -> {after} KiB, {(after-before)/N:.2f} KiB per connection")
